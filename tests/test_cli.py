"""The shared stage command line: help text, params loading, the seed check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recdistill import cli, params


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


def test_unseeded_stages_take_no_seed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="^2$"):  # argparse's usage-error exit code
        cli.stage_parser(None).parse_args(["--seed", "1"])
    assert "error: unrecognized arguments: --seed 1" in capsys.readouterr().err


def test_a_bad_value_names_the_params_file_that_was_read(tmp_path: Path) -> None:
    path = write_params(tmp_path)
    path.write_text(path.read_text().replace("lr: 0.003", "lr: fast", 1))
    with pytest.raises(params.ParamsError, match=rf"^{re.escape(str(path))}: train\.ctr\.optim\.lr = 'fast'"):
        cli.parse(cli.stage_parser(None), ["--params", str(path)])


def test_help_shows_defaults_but_not_for_required_options(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.stage_parser("Doc.", seeded=True)
    parser.add_argument("--data", default="data/prepared/seq", help="seq split dir")
    parser.add_argument("--teacher", help="teacher model.pt")
    help_text = " ".join(parser.format_help().split())
    assert "--data DATA seq split dir (default: data/prepared/seq)" in help_text
    assert "--params PARAMS params file (default: params.yaml)" in help_text
    assert "teacher model.pt" in help_text and "(default: None)" not in help_text
    assert "one of the params' seeds (default" not in help_text


@pytest.mark.parametrize("error", [params.ParamsError("params.yaml: seeds = [] is invalid"),
                                   FileNotFoundError(2, "No such file or directory", "data/x.parquet")])
def test_run_prints_a_user_error_as_one_line(error: Exception, capsys: pytest.CaptureFixture[str]) -> None:
    def main() -> None:
        raise error
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main)
    assert exit_info.value.code == 1
    expected = {params.ParamsError: "recdistill.params.ParamsError: params.yaml: seeds = [] is invalid",
                FileNotFoundError: "FileNotFoundError: [Errno 2] No such file or directory: 'data/x.parquet'"}
    assert capsys.readouterr().err == expected[type(error)] + "\n"


def test_run_leaves_a_bug_its_traceback() -> None:
    def main() -> None:
        raise KeyError("a bug")
    with pytest.raises(KeyError, match="a bug"):
        cli.run(main)
