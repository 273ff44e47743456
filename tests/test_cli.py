"""The shared stage command line: help text, params loading, the seed check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recdistill import cli


def write_params(tmp_path: Path) -> Path:
    """The repository's params with seeds [3, 5]."""
    text = (Path(__file__).parents[1] / "params.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(re.sub(r"(?m)^seeds: .*$", "seeds: [3, 5]", text))
    return path


def test_parse_loads_the_params_and_accepts_a_listed_seed(tmp_path: Path) -> None:
    parser = cli.stage_parser("Doc of a stage.", seeded=True)
    args, p = cli.parse(parser, ["--seed", "5", "--params", str(write_params(tmp_path))])
    assert args.seed == 5 and p.seeds == (3, 5)
    assert parser.description == "Doc of a stage."


def test_a_seed_outside_the_params_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_params(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.parse(cli.stage_parser(None, seeded=True), ["--seed", "4", "--params", str(path)])
    assert exit_info.value.code == 2
    assert f"--seed 4 is not in seeds [3, 5] of {path}" in capsys.readouterr().err


def test_unseeded_stages_take_no_seed() -> None:
    with pytest.raises(SystemExit):
        cli.stage_parser(None).parse_args(["--seed", "1"])
