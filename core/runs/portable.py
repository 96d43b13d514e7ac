"""Finished runs moved between data folders as one ZIP (a "pack"): e.g. from
the cluster node that ran a DDP job to a laptop's dashboard.

A pack holds `manifest.json` (what it is, the store schema it was written
with, its runs), each run's rows of the store (`store/RUN.json`: the run,
step, epoch, rank metrics, layer stats, events) and its files: the run folder
(checkpoints, best and last, config.toml) under `runs/RUN/` and its
TensorBoard events under `tensorboard/RUN/`. Unpacking checks the ZIP like
any upload (size, entries, compression ratio, every name inside the run's own
folder), refuses ids the receiving store already has, and fills the columns a
newer schema added with their defaults (the store itself is migrated when it
opens); a pack from a newer app is refused with a message.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path, PurePosixPath

from core import limits, paths
from core.errors import TLabError
from core.runs.schema import SCHEMA_VERSION, TERMINAL
from core.runs.store import Store

FORMAT = "transfer-learning-lab-runs"
TABLES = ("runs", "step_metrics", "epoch_metrics", "rank_metrics", "layer_stats", "events")
MACHINE_COLUMNS = ("worker_pid", "pid_start", "heartbeat", "cancel_requested")  # about the machine that ran it
SKIP_SUFFIXES = (".part", ".tmp")


class PackError(TLabError):
    pass


def _rows(store: Store, table: str, run_id: str) -> dict:
    key = "id" if table == "runs" else "run_id"
    cur = store.query(f"SELECT * FROM {table} WHERE {key} = ?", (run_id,))
    cols = list(cur[0].keys()) if cur else [r[1] for r in store.query(f"PRAGMA table_info({table})")]
    return {"columns": cols, "rows": [list(r) for r in cur]}


def _files(run_id: str) -> list[tuple[Path, str]]:
    out = []
    for root, prefix in ((paths.run_dir(run_id), f"runs/{run_id}"), (paths.home() / "tensorboard" / run_id, f"tensorboard/{run_id}")):
        if root.is_dir():
            out += [(p, f"{prefix}/{p.relative_to(root).as_posix()}") for p in sorted(root.rglob("*"))
                    if p.is_file() and not p.is_symlink() and not p.name.endswith(SKIP_SUFFIXES)]
    return out


def pack_bytes(run_ids: list[str], store: Store | None = None) -> bytes:
    """The pack of these runs, as ZIP bytes. Raises PackError for a run still going or unknown."""
    store = store or Store()
    if not run_ids:
        raise PackError("Name at least one run to pack: `python -m core runs` lists them.")
    run_ids = list(dict.fromkeys(paths.check_run_id(r) for r in run_ids))
    for r in run_ids:
        status = store.run(r)["status"]
        if status not in TERMINAL:
            raise PackError(f"Run {r} is {status}: pack it once it has ended (wait for it, or cancel it).")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps({"format": FORMAT, "schema": SCHEMA_VERSION, "runs": run_ids}, indent=2))
        for r in run_ids:
            zf.writestr(f"store/{r}.json", json.dumps({t: _rows(store, t, r) for t in TABLES}))
            if not paths.run_dir(r).joinpath("config.toml").exists():  # runs made before run files existed
                from core.train import runfile
                from core.train.config import RunConfig

                zf.writestr(f"runs/{r}/config.toml", runfile.dumps(RunConfig.from_json(store.run(r)["config"])))
            for path, name in _files(r):
                zf.write(path, name)
    return buf.getvalue()


def pack(run_ids: list[str], out: str | Path, store: Store | None = None) -> Path:
    """Write the pack to `out`; its path. Anywhere the person chooses: a pack leaves the data folder."""
    out = Path(out).expanduser()
    if out.suffix.lower() != ".zip":
        raise PackError(f"A pack is a ZIP: name it {out.with_suffix('.zip').name}.")
    content = pack_bytes(run_ids, store)
    return paths.write_atomic(out, content, PackError)


# --- unpacking -------------------------------------------------------------------------


def _check_zip(name: str, zf: zipfile.ZipFile, run_ids: list[str]) -> None:
    """Like every upload: entry count, unpacked size, compression ratio; and every
    name a file of one of the pack's own runs (no absolute path, no '..', no link)."""
    infos = zf.infolist()
    if len(infos) > limits.max_files():
        raise PackError(f"{name} holds {len(infos):,} entries, over {limits.MAX_FILES.describe()}.")
    total = sum(i.file_size for i in infos)
    if total > limits.max_archive_bytes():
        raise PackError(f"{name} unpacks to {total / 2**20:,.0f} MB, over {limits.MAX_ARCHIVE_MB.describe()}.")
    ratio = limits.max_zip_ratio()
    for i in infos:
        if i.file_size > 1_000_000 and i.file_size > ratio * max(1, i.compress_size):
            raise PackError(f"{name}: entry {i.filename} unpacks to {i.file_size / max(1, i.compress_size):,.0f} times "
                            f"its packed size, over {limits.MAX_ZIP_RATIO.describe()}; that is how a ZIP bomb looks.")
        p = PurePosixPath(i.filename)
        is_link = (i.external_attr >> 16) & 0o170000 == 0o120000
        ok = (not p.is_absolute() and ".." not in p.parts and "\\" not in i.filename and not is_link
              and (i.filename == "manifest.json" or i.is_dir()
                   or (len(p.parts) == 2 and p.parts[0] == "store" and p.stem in run_ids and p.suffix == ".json")
                   or (len(p.parts) >= 3 and p.parts[0] in ("runs", "tensorboard") and p.parts[1] in run_ids)))
        if not ok:
            raise PackError(f"{name} is not a pack of this app's runs: its entry {i.filename[:120]!r} would land "
                            "outside its run's folder. Make packs with `python -m core pack` or the Compare page.")


def _manifest(name: str, zf: zipfile.ZipFile) -> list[str]:
    try:
        m = json.loads(zf.read("manifest.json"))
    except (KeyError, ValueError):
        raise PackError(f"{name} is not a pack of runs (no readable manifest.json): make one with "
                        "`python -m core pack RUN_ID... --out runs.zip` or the Compare page.") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("runs"), list):
        raise PackError(f"{name} is not a pack of this app's runs: make one with `python -m core pack`.")
    if not isinstance(m.get("schema"), int) or m["schema"] > SCHEMA_VERSION:
        raise PackError(f"{name} was made by a newer version of the app (store schema {m.get('schema')}, this one "
                        f"reads up to {SCHEMA_VERSION}): update this app, then unpack it again.")
    return [paths.check_run_id(r) for r in m["runs"]]


def _insert(c, table: str, data: dict, known: set[str]) -> None:
    cols = [k for k in data["columns"] if k in known and not (table == "events" and k == "id")]
    extra = set(data["columns"]) - known
    if extra:
        raise PackError(f"the pack's {table} has columns this app doesn't know ({', '.join(sorted(extra))}): "
                        "update this app, then unpack it again.")
    idx = [data["columns"].index(k) for k in cols]
    rows = [[None if table == "runs" and cols[j] in MACHINE_COLUMNS else row[i] for j, i in enumerate(idx)]
            for row in data["rows"]]
    if table == "runs":
        rows = [[0 if cols[j] == "cancel_requested" else v for j, v in enumerate(r)] for r in rows]
    if rows:
        c.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)


def unpack_bytes(name: str, content: bytes, store: Store | None = None) -> list[str]:
    """Add a pack's runs to this data folder's store and files; their ids. Raises PackError."""
    store = store or Store()
    if len(content) > limits.max_upload_bytes():
        raise PackError(f"{name} is {len(content) / 2**20:,.1f} MB, over {limits.MAX_UPLOAD_MB.describe()}.")
    try:
        zf = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise PackError(f"{name} is not a ZIP file: give a pack made with `python -m core pack`.") from None
    with zf:
        run_ids = _manifest(name, zf)
        _check_zip(name, zf, run_ids)
        have = {r["id"] for r in store.query(f"SELECT id FROM runs WHERE id IN ({','.join('?' * len(run_ids))})", run_ids)}
        have |= {r for r in run_ids if paths.run_dir(r).exists() or (paths.home() / "tensorboard" / r).exists()}
        if have:
            raise PackError(f"{name}: this data folder already has run(s) {', '.join(sorted(have))}; nothing was "
                            "unpacked. Delete them here first, or unpack into another data folder (TLAB_HOME).")
        stores = {r: json.loads(zf.read(f"store/{r}.json")) for r in run_ids}
        known = {t: {row[1] for row in store.query(f"PRAGMA table_info({t})")} for t in TABLES}
        home = paths.home().resolve()
        try:
            for info in zf.infolist():
                parts = PurePosixPath(info.filename).parts
                if info.is_dir() or parts[0] not in ("runs", "tensorboard"):
                    continue
                base = home / parts[1] if parts[0] == "runs" else home / "tensorboard" / parts[1]
                target = paths.inside_home(base.joinpath(*parts[2:]), "unpacked file")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            with store.tx() as c:
                for r in run_ids:
                    for t in TABLES:
                        if t in stores[r]:
                            _insert(c, t, stores[r][t], known[t])
        except BaseException:  # nothing half-unpacked stays: the folders did not exist before
            import shutil

            for r in run_ids:
                shutil.rmtree(paths.run_dir(r), ignore_errors=True)
                shutil.rmtree(paths.home() / "tensorboard" / r, ignore_errors=True)
            raise
    return run_ids


def unpack(path: str | Path, store: Store | None = None) -> list[str]:
    p = Path(path).expanduser()
    try:
        content = p.read_bytes()
    except OSError as e:
        raise PackError(f"Can't read {p} ({e.strerror or e}): give the path of a pack (.zip).") from None
    return unpack_bytes(p.name, content, store)
