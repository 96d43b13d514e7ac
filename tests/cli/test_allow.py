"""`python -m core allow`: the folders `folder:PATH` may read, recorded in the
data folder's settings file, read afresh at each use; the refusal names the
exact command."""

from __future__ import annotations

import json

import pytest

from core import paths
from core.cli.main import main as cli_main
from core.errors import ConfigError


@pytest.fixture
def pictures(tmp_path, monkeypatch):
    monkeypatch.delenv("TLAB_FOLDER_ROOTS")  # only the data folder and what `allow` records
    for c in ("cats", "dogs"):
        (tmp_path / "pictures" / c).mkdir(parents=True)
    return tmp_path / "pictures"


def test_allow_list_remove_round_trip(pictures, capsys):
    assert cli_main(["allow", str(pictures)]) == 0
    assert cli_main(["allow", str(pictures / ".")]) == 0  # the same folder twice is recorded once
    capsys.readouterr()
    assert cli_main(["allow", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["from"] for r in listed] == ["the data folder", "python -m core allow"]
    assert listed[1]["folder"] == str(pictures.resolve())
    assert paths.settings_path().read_text().count(str(pictures)) == 1
    assert cli_main(["allow", "--remove", str(pictures)]) == 0
    assert pictures.resolve() not in paths.allowed_roots()
    assert cli_main(["allow", "--remove", str(pictures)]) == 2  # not recorded (any more): one clear line
    assert "allow --list" in capsys.readouterr().err
    assert cli_main(["allow", str(pictures / "no_such_folder")]) == 2


def test_the_refusal_names_the_exact_command_and_the_allowed_folder_counts_at_its_next_use(pictures, capsys):
    from core.train import data

    dataset = f"folder:{pictures / 'holiday.zip'}"
    with pytest.raises(ConfigError) as e:
        data.get(dataset)
    command = f"TLAB_HOME={paths.home()} python -m core allow {pictures}"  # the ZIP's folder, this data folder
    assert f"run `{command}`" in str(e.value) and "no restart" in str(e.value)
    assert cli_main(command.split(" ")[4:]) == 0  # what a person runs in a terminal, while this process goes on
    assert data.get(f"folder:{pictures}").source == "folder"  # this process's next use: no restart


def test_a_broken_settings_file_is_one_clear_message(pictures):
    paths.settings_path().parent.mkdir(parents=True, exist_ok=True)
    paths.settings_path().write_text("[folders\nallowed = 3")
    with pytest.raises(ConfigError, match="settings.toml is not valid TOML.*allow PATH"):
        paths.allowed_roots()
