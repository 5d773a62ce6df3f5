"""The movie-embedding study end to end: 2A data, 2B fit, 2C recommendations, stability, held-out check, map,
dimension sweep.

Each step is a function from the earlier steps' products to its own (``prepare``, ``steps``, ``holdout``, ``dims``);
the runner hands each step's output to the store as soon as the step finishes, so a failure later on never loses what
was already computed. Under torchrun every rank runs the same steps in lockstep on its share of the users; only rank 0's
run folder is kept.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

from threadpoolctl import threadpool_limits

from embedlab.allocator import release_freed_memory
from embedlab.config import MoviesConfig
from embedlab.data import movielens_digests, resolve_data_dir
from embedlab.distributed import current
from embedlab.errors import InputError
from embedlab.movies.dims import step_dim_sweep
from embedlab.movies.holdout import fit_contenders, step_holdout
from embedlab.movies.prepare import step_2a_data
from embedlab.movies.steps import step_2b_fit, step_2c_recommend, step_map, step_stability
from embedlab.results import MoviesRun, RunResults
from embedlab.store import Collecting, Output


def run_movies(cfg: MoviesConfig, write: Callable[[Output], None]) -> RunResults:
    """Run the whole study, handing each step's output to ``write`` as soon as the step finishes (``store.writer`` of a
    run folder); returns the study's results.

    numpy's BLAS is held to one thread throughout: its idle threads spin after every numpy/scipy
    product and steal the cores from torch's (measured: the sweep 20 % and eigsh 7x slower).
    """
    with threadpool_limits(1, "blas"):
        return _run_movies(cfg, write)


def _run_movies(cfg: MoviesConfig, to_store: Callable[[Output], None]) -> RunResults:
    dist = current()
    cfg.validate()
    t_all = time.perf_counter()
    collect = Collecting(to_store)

    def write(out: Output) -> None:
        collect(out)
        release_freed_memory()  # what the step freed is not kept under the next step's peak

    data = step_2a_data(cfg)
    write(data.out)
    fitted = step_2b_fit(cfg, data)
    write(fitted.out)
    recommended = step_2c_recommend(cfg, data, fitted)
    write(recommended.out)
    write(step_stability(cfg, data, fitted, recommended.top_lists))
    contenders = fit_contenders(cfg, data, fitted)
    release_freed_memory()  # the fits' freed memory, before the scoring's blocks are allocated
    held = step_holdout(cfg, contenders)
    write(held.out)
    if cfg.embedding_map and dist.is_main:  # rank 0 alone draws: the others' folders are discarded
        write(step_map(cfg, data, fitted, recommended.top_lists))
    if cfg.dim_sweep:
        write(step_dim_sweep(cfg, fitted, held))
    done = MoviesRun(
        total_seconds=round(time.perf_counter() - t_all, 1),
        processes=dist.world,
        peak_rss_gib=round(peak_rss_bytes() / 1024**3, 2),
    )
    write(Output(results=(done,)))
    return collect.results()


def check_same_data(cfg: MoviesConfig, started: RunResults, where: Path) -> None:
    """A resumed run goes on with the data it started on: the files' sha256 recorded by its 2A (in ``started``, the
    results of the run folder ``where``) must match those under ``cfg.data_dir`` now (the same files in another folder
    are fine). Checked before the run folder is touched."""
    recorded = started.movies_data.files_sha256 if started.movies_data is not None else {}
    if not recorded or cfg.synthetic:
        return
    folder = resolve_data_dir(cfg.data_dir) / cfg.dataset
    if not all((folder / name).is_file() for name in recorded):
        return  # missing files: ensure_movielens says which, in its own words
    now = movielens_digests(folder)
    changed = [name for name, digest in recorded.items() if now.get(name) != digest]
    if changed:
        raise InputError(
            f"{where} was computed on other data: {', '.join(str(folder / n) for n in changed)} differ(s) from the"
            f" file(s) it read (sha256 {', '.join(recorded[n][:12] + '…' for n in changed)}); resume it with the data"
            " it started on (any folder holding the same files), or start a new run"
        )


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
