"""``app.resources.data_dir``: the checkout's data folders first, else an installed wheel's copy."""

from __future__ import annotations

from pathlib import Path

from app.resources import CHECKOUT, SHARE, data_dir


def test_a_checkout_reads_its_own_folders(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    installed = tmp_path / "prefix" / SHARE / "prompts"
    installed.mkdir(parents=True)
    assert data_dir("prompts", checkout=tmp_path, prefixes=(str(tmp_path / "prefix"),)) == tmp_path / "prompts"


def test_an_installed_wheel_reads_the_first_prefix_that_has_the_folder(tmp_path: Path) -> None:
    site_packages, env, user = tmp_path / "site-packages", tmp_path / "env", tmp_path / "user"
    site_packages.mkdir()
    (user / SHARE / "adapters").mkdir(parents=True)
    assert data_dir("adapters", checkout=site_packages, prefixes=(str(env), str(user))) == user / SHARE / "adapters"
    (env / SHARE / "adapters").mkdir(parents=True)
    assert data_dir("adapters", checkout=site_packages, prefixes=(str(env), str(user))) == env / SHARE / "adapters"


def test_without_any_copy_the_expected_checkout_path_is_named(tmp_path: Path) -> None:
    assert data_dir("prompts", checkout=tmp_path, prefixes=(str(tmp_path / "none"),)) == tmp_path / "prompts"


def test_this_checkout_uses_its_repository_folders() -> None:
    assert data_dir("prompts") == CHECKOUT / "prompts"
    assert (data_dir("prompts") / "drafter.md").is_file()
