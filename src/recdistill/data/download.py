"""Fetch ML-100K from the sources listed in params, verify sha256, report every failure.

Sources are tried in order (ARCHITECTURE §4). Before any network access each source is
looked for in the manual directory (``data/external/<file name>``), so a machine without
network can use an archive placed there by hand. A ``file`` source is a local path.
The GroupLens zip carries ratings, users and items; only the RecBole wheel also carries the
Freebase ``.kg``/``.link`` item attributes, so a wheel source is always needed for those.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from recdistill.errors import UserError
from recdistill.data.canonical import Canonical, DataError, has_attributes, parse_archive, validate
from recdistill.io import file_digest
from recdistill.params import Expect, Source

__all__ = ["DownloadError", "Fetched", "fetch_source", "acquire"]

log = logging.getLogger(__name__)


class DownloadError(UserError, RuntimeError):
    """No source could provide verified data."""


@dataclass(frozen=True)
class Fetched:
    source: Source
    path: Path  # the verified archive


def _file_name(source: Source) -> str:
    if source.kind == "pip-wheel":
        name, _, version = source.url.partition("==")
        return f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    return Path(source.url).name


def _download(source: Source, workdir: Path, timeout: float) -> Path:
    if source.kind == "file":
        path = Path(source.url)
        if not path.is_file():
            raise FileNotFoundError(f"no such file {path}")
        return path
    if source.kind == "zip":
        target = workdir / _file_name(source)
        with urllib.request.urlopen(source.url, timeout=timeout) as response, open(target, "wb") as f:
            shutil.copyfileobj(response, f)
        return target
    # pip-wheel: let pip use the machine's configured package index.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "--dest", str(workdir), source.url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise OSError(f"pip download failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise OSError("pip download produced no wheel")
    return wheels[0]


def fetch_source(source: Source, workdir: Path, manual_dir: Path, timeout: float) -> Path:
    """Return a verified local archive for ``source`` or raise with the reason."""
    manual = manual_dir / _file_name(source)
    if manual.is_file():
        path = manual
        log.info("%s: using %s placed by hand", source.name, manual)
    else:
        sub = workdir / source.name
        sub.mkdir(parents=True, exist_ok=True)
        path = _download(source, sub, timeout)
    actual = file_digest(path, "sha256")
    if actual != source.sha256.lower():
        raise DataError(f"sha256 mismatch for {path.name}: expected {source.sha256}, got {actual}")
    return path


def acquire(sources: tuple[Source, ...], workdir: Path, manual_dir: Path, timeout: float,
            expect: Expect | None = None) -> tuple[Canonical, list[Fetched]]:
    """Canonical tables (with item attributes) from the first sources that verify.

    With ``expect``, the tables of a source are also validated (counts, ids, duplicates); a
    source that fails is reported with its name and the next one is tried.

    Raises :class:`DownloadError` listing each source tried and why it failed.
    """
    failures: list[str] = []
    core: Canonical | None = None
    used: list[Fetched] = []
    for source in sources:
        try:
            path = fetch_source(source, workdir, manual_dir, timeout)
            if core is not None and not has_attributes(path):
                continue  # we still need attributes, and this archive has none
            origin = f"{source.name} ({path.name})"
            parsed = parse_archive(path, origin=origin)
            if core is None and expect is not None:
                try:
                    validate(parsed, expect)
                except DataError as err:
                    raise DataError(f"{origin}: {err}") from None
        except (OSError, DataError, subprocess.SubprocessError, urllib.error.URLError) as err:
            failures.append(f"  - {source.name} [{source.kind}] {source.url}: "
                            f"{type(err).__name__}: {err}")
            log.warning("source %s failed: %s", source.name, err)
            continue
        used.append(Fetched(source, path))
        if core is None:
            core = parsed
        if has_attributes(path):
            core.attributes = parsed.attributes
            return core, used
    names = ", ".join(_file_name(s) for s in sources if s.kind != "file")
    hint = (f"download one of [{names}] on a machine with network access (e.g. `pip download "
            f"--no-deps recbole==1.2.1`) and place it in {manual_dir}/" if names else
            f"check the paths of the file sources in download.sources, or place the archive "
            f"named there in {manual_dir}/")
    what = "ML-100K" if core is None else "the item attributes (.kg/.link, only in the RecBole wheel)"
    raise DownloadError(
        f"could not obtain {what} from any source:\n" + "\n".join(failures or ["  (none listed)"])
        + f"\nTo install by hand, {hint}; its sha256 must match download.sources in params.yaml.")
