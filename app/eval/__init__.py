"""Evaluation harness: Speculative RAG against its baselines and ablations on the same questions, in one run
(``specrag eval``). ``dataset`` reads the shared format, ``metrics`` scores answers as the shared README says,
``systems`` runs every system on a question, ``runner`` drives a run (resumable), ``stats``, ``report`` and
``plots`` turn the per-question records into tables and figures."""
