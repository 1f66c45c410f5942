"""`layerflow weights download`: fetch a registry entry into LAYERFLOW_WEIGHTS in the layout its loaders read.

The one place that touches the network, and only when the user runs the command. Each file lands under
`<root>/<subdir>/` with the name the registry gives it; a file is written to `<name>.part` and renamed when
complete, so an interrupted download never looks present to `layerflow weights check`. Hub downloads go through
huggingface_hub (which honours `HF_ENDPOINT` and `HF_TOKEN`); `endpoint` overrides the hub address (a mirror).
"""
from __future__ import annotations

import os
import shutil
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from data_engine.weights import MissingWeightsError, WeightSpec, missing_files, model_dir, spec

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that did not give the files the loaders need; the message names the entry and what is wrong."""


def download(name: str, root: str | os.PathLike | None = None, *, endpoint: str | None = None,
             report: Callable[[str], None] = print) -> Path:
    """Fetch `name`; returns its folder. Raises DownloadError unless every registry file is then present."""
    s = spec(name)
    target = model_dir(name, root)
    target.mkdir(parents=True, exist_ok=True)
    if s.url:
        for filename in s.files:
            _fetch_url(_file_url(s, filename), target / filename, s.archive, report)
    elif ":" in s.hub_id:
        raise DownloadError(f"{name}: {s.hub_id} is not a hub repository and the registry gives no url; "
                            f"fetch it by hand into {target / s.files[0]}")
    else:
        _fetch_hub(s, target, endpoint, report)
    try:
        still_missing = missing_files(name, root)
    except MissingWeightsError as exc:
        raise DownloadError(str(exc)) from None
    if still_missing:
        raise DownloadError(f"{name}: downloaded {s.hub_id} but {len(still_missing)} file(s) the loaders read are "
                            f"missing, e.g. {still_missing[0]}; the release layout changed: update "
                            f"infra/weights/*.yaml")
    report(f"{name}: ready at {target}")
    return target


def _file_url(s: WeightSpec, filename: str) -> str:
    assert s.url is not None
    url = s.url + filename if s.url.endswith("/") else s.url
    return url + ".zip" if s.archive == "zip" else url


def _fetch_url(url: str, dest: Path, archive: str | None, report: Callable[[str], None]) -> None:
    if dest.is_file():
        report(f"  {dest.name}: present, kept")
        return
    if archive not in (None, "zip"):
        raise DownloadError(f"{url}: unknown archive kind {archive!r} in the weights registry (known: zip)")
    report(f"  {dest.name} <- {url}")
    part = dest.with_name(dest.name + (".zip.part" if archive else ".part"))
    with urllib.request.urlopen(url) as response, part.open("wb") as out:
        shutil.copyfileobj(response, out, CHUNK)
    if archive == "zip":
        _extract(part, dest, url)
    else:
        part.replace(dest)


def _extract(archive: Path, dest: Path, url: str) -> None:
    """The member of a zip archive named like `dest`, whatever folder it sits in inside the archive."""
    part = dest.with_name(dest.name + ".part")
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if PurePosixPath(n).name == dest.name]
            if not names:
                raise DownloadError(f"{url}: the archive holds no {dest.name} (it has {zf.namelist()[:5]})")
            with zf.open(names[0]) as member, part.open("wb") as out:
                shutil.copyfileobj(member, out, CHUNK)
    except zipfile.BadZipFile:
        raise DownloadError(f"{url}: not a zip archive; the release format changed") from None
    finally:
        archive.unlink(missing_ok=True)
    part.replace(dest)


def _fetch_hub(s: WeightSpec, target: Path, endpoint: str | None, report: Callable[[str], None]) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download

    if s.snapshot:
        report(f"  {s.hub_id} (whole repository) -> {target}")
        snapshot_download(repo_id=s.hub_id, revision=s.revision, local_dir=str(target), endpoint=endpoint)
    else:
        for filename in s.files:
            report(f"  {filename} <- {s.hub_id}")
            hf_hub_download(repo_id=s.hub_id, filename=filename, revision=s.revision, local_dir=str(target),
                            endpoint=endpoint)
