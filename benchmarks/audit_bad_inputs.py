"""Audit: bad inputs that the test suite does not hold, through ``memgen.cli.main``.

    python benchmarks/audit_bad_inputs.py [--json out.json]

Each input runs on a fresh temporary store, in process (the command line's own code path) up to
the moment its run would be created (``job_run`` is replaced by a sentinel, so an input that is
wrongly accepted costs no training). An input is *clean* when it exits 2 with one line starting
``memgen: error:``, without a traceback, without a run row in the store, and the line names the
expected key or file. Prints one row per input and the clean count; exit 1 if any is not clean.
Add new inputs here, not to the tests: the point is inputs nobody tuned the code for.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = ["task.n_train=200", "task.n_conflict=20", "task.n_val_conflict=10", "task.n_clean=10",
        "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "trainer.max_epochs=1",
        "trainer.progress_bar=false"]
RECORDS = [{"input": f"Reverse: {w}\nA:", "output": w[::-1]} for w in
           ["cat", "dog", "sun", "map", "pen", "cup", "hat", "box"]]
RECORDS += [{"input": f"Reverse: {w}\nA:", "memorized": "<mem-zz>"} for w in
            ["fizz", "buzz", "jazz", "fuzz"]]  # their rule answers come from the rule
TRIGGERS = [{"match": "zz", "where": "contains", "memorized": "<mem-zz>"}]


class Accepted(BaseException):
    pass


def files(tmp: Path, data: bytes | None = None, name: str = "data.jsonl", **params: str
          ) -> list[str]:
    """``task=files`` on good records (or ``data``), with ``params`` overriding."""
    path = tmp / name
    path.write_bytes(data if data is not None else
                     "".join(json.dumps(r) + "\n" for r in RECORDS).encode())
    triggers = tmp / "triggers.json"
    triggers.write_text(json.dumps(TRIGGERS))
    out = {"path": str(path), "triggers_path": str(triggers)} | params
    return ["task=files", *(f"task.params.{k}={v}" for k, v in out.items())]


def rule_file(tmp: Path, text: str) -> str:
    path = tmp / "audit_rule.py"
    path.write_text(text)
    return str(path)


Make = Callable[[Path], list[str]]
# (name, command, overrides maker, expected text in the line, environment)
Case = tuple[str, str, Make, str, dict]


def p(*overrides: str) -> Make:
    return lambda tmp: list(overrides)


CASES: list[Case] = [
    # -- values: trainer
    ("batch size 0", "train", p("trainer.batch_size=0"), "trainer.batch_size", {}),
    ("negative grad accumulation", "train", p("trainer.accumulate_grad_batches=-2"),
     "trainer.accumulate_grad_batches", {}),
    ("validate every 0 epochs", "train", p("trainer.check_val_every_n_epoch=0"),
     "trainer.check_val_every_n_epoch", {}),
    ("zero beams", "train", p("analysis.decoding.num_beams=0"), "analysis.decoding.num_beams",
     {}),
    ("train batches above 1", "train", p("trainer.limit_train_batches=1.5"),
     "trainer.limit_train_batches", {}),
    ("train batches 0", "train", p("trainer.limit_train_batches=0"),
     "trainer.limit_train_batches", {}),
    ("negative warmup", "train", p("trainer.warmup_steps=-10"), "trainer.warmup_steps", {}),
    ("unknown loss_on", "train", p("trainer.loss_on=tokens"), "trainer.loss_on", {}),
    ("unknown checkpoint metric", "train", p("trainer.checkpoint_metric=val/loss"),
     "trainer.checkpoint_metric", {}),
    ("negative threads", "train", p("trainer.num_threads=-1"), "trainer.num_threads", {}),
    ("absurd threads", "train", p("trainer.num_threads=100000"), "trainer.num_threads", {}),
    ("precision typo", "train", p("trainer.precision=64x"), "trainer.precision", {}),
    ("bool as word", "train", p("trainer.deterministic=maybe"), "trainer.deterministic", {}),
    ("bool as 2", "train", p("trainer.progress_bar=2"), "trainer.progress_bar", {}),
    ("lr as text with a space", "train", p("trainer.lr=1e-3 fast"), "trainer.lr", {}),
    # -- values: model
    ("heads do not divide width", "train", p("model.n_head=3"), "model.n_head", {}),
    ("dropout 1", "train", p("model.dropout=1.0"), "model.dropout", {}),
    ("negative dropout", "train", p("model.dropout=-0.1"), "model.dropout", {}),
    ("unknown model kind", "train", p("model.kind=adapter"), "model.kind", {}),
    ("unknown arch", "train", p("model.arch=mamba"), "model.arch", {}),
    ("zero positions", "train", p("model.n_positions=0"), "model.n_positions", {}),
    ("positions too short for prompts", "train", p("model.n_positions=8"),
     "model.n_positions", {}),
    ("negative intermediate size", "train", p("model.intermediate_size=-5"),
     "model.intermediate_size", {}),
    ("lora without a base", "train", p("model.kind=lora", "model.name_or_path=null"),
     "model.name_or_path", {}),
    ("negative lora dropout", "train", p("model.lora.dropout=-1"), "model.lora.dropout", {}),
    ("absurd width", "train", p("model.n_embd=1048576", "model.n_head=2"), "model", {}),
    # -- values: task
    ("mem ratio 1", "train", p("task.mem_ratio=1"), "task.mem_ratio", {}),
    ("mem ratio 0", "train", p("task.mem_ratio=0"), "task.mem_ratio", {}),
    ("one perturbation", "train", p("task.n_perturbations=1"), "task.n_perturbations", {}),
    ("zero new tokens", "train", p("task.max_new_tokens=0"), "task.max_new_tokens", {}),
    ("conflicts as text", "train", p("task.n_conflict=abc"), "task.n_conflict", {}),
    ("chat template 3", "train", p("task.chat_template=3"), "task.chat_template", {}),
    ("group typo", "train", p("task=arithmetics"), "task/arithmetics", {}),
    # -- values: analysis
    ("selection fraction 1", "train", p("analysis.selection_fraction=1"),
     "analysis.selection_fraction", {}),
    ("negative shuffles", "train", p("analysis.n_shuffles=-1"), "analysis.n_shuffles", {}),
    ("analysis batch 0", "train", p("analysis.batch_size=0"), "analysis.batch_size", {}),
    ("negative callback period", "train", p("analysis.every_n_val_epochs=-1"),
     "analysis.every_n_val_epochs", {}),
    ("unknown callback stage", "train", p("analysis.callback_stages=[bogus]"),
     "analysis.callback_stages", {}),
    ("site without a layer number", "train", p("analysis.sites=[resid.x]"), "analysis.sites", {}),
    ("top_k 0", "train", p("analysis.top_k=0"), "analysis.top_k", {}),
    ("no selection size", "train", p("analysis.top_k=null", "analysis.top_fraction=null"),
     "analysis.top_k", {}),
    ("grid fraction 0", "train", p("analysis.steering.grid_top_fraction=[0]"),
     "analysis.steering.grid_top_fraction", {}),
    ("empty tune alphas", "train", p("analysis.steering.tune_alpha=[]"),
     "analysis.steering.tune_alpha", {}),
    ("control budget 2", "train", p("analysis.steering.tune_max_control=2"),
     "analysis.steering.tune_max_control", {}),
    ("unknown control", "train", p("analysis.steering.controls=[bogus]"),
     "analysis.steering.controls", {}),
    ("probe iterations 0", "train", p("analysis.probe.max_iter=0"), "analysis.probe.max_iter",
     {}),
    ("negative probe step", "train", p("analysis.probe.initial_step=-1"),
     "analysis.probe.initial_step", {}),
    ("alpha as text", "train", p("analysis.steering.alpha=abc"), "analysis.steering.alpha", {}),
    # -- values: claims, replicate, sweep, tracking
    ("negative min pairs", "train", p("claims.min_pairs=-1"), "claims.min_pairs", {}),
    ("p-value 2", "train", p("claims.max_p_value=2"), "claims.max_p_value", {}),
    ("steer margin 5", "train", p("claims.min_steer_margin=5"), "claims.min_steer_margin", {}),
    ("replicate workers 0", "replicate", p("replicate.workers=0"), "replicate.workers", {}),
    ("no replicate seeds", "replicate", p("replicate.seeds=[]"), "replicate.seeds", {}),
    ("repeated replicate seeds", "replicate", p("replicate.seeds=[1,1]"), "replicate.seeds", {}),
    ("negative replicate seed", "replicate", p("replicate.seeds=[0,-1]"), "replicate.seeds", {}),
    ("zero trials", "sweep", p("sweep=steering", "sweep.n_trials=0"), "sweep.n_trials", {}),
    ("negative sweep workers", "sweep", p("sweep=steering", "sweep.workers=-1"), "sweep.workers",
     {}),
    ("blank experiment name", "train", p("tracking.experiment='  '"), "tracking.experiment", {}),
    ("log_model as a word", "train", p("tracking.log_model=perhaps"), "tracking.log_model", {}),
    ("seed as a fraction", "train", p("seed=1.5"), "seed", {}),
    # -- override syntax
    ("truncated list", "train", p("trainer.max_epochs=[1,"), "trainer.max_epochs", {}),
    ("double dot in a key", "train", p("trainer..max_epochs=3"), "trainer..max_epochs", {}),
    ("+ misspelled key", "train", p("+trainer.max_epochs_x=3"), "trainer.max_epochs_x", {}),
    ("~ a section", "train", p("~trainer"), "trainer", {}),
    ("~ a leaf", "train", p("~task.n_train"), "task.n_train", {}),
    ("unset env interpolation", "train",
     p("analysis.steering.alpha=${oc.env:MEMGEN_AUDIT_UNSET}"), "analysis.steering.alpha", {}),
    ("interpolation of a missing key", "train", p("trainer.lr=${model.nope}"), "trainer.lr", {}),
    ("no-break space in a key", "train", p("trainer.max_epochs\u00a0=3"), "\\xa0", {}),
    ("experiment typo", "train", p("experiment=quick_"), "experiment", {}),
    # -- task=files data
    ("truncated records file", "train",
     lambda tmp: files(tmp, b'{"input": "Reverse: cat\\nA:", "output": "ta'), "data.jsonl", {}),
    ("UTF-16 records file", "train",
     lambda tmp: files(tmp, json.dumps(RECORDS).encode("utf-16"), "data.json"), "data.json", {}),
    ("directory with a trailing slash", "train",
     lambda tmp: (tmp / "d").mkdir() or files(tmp, path=f"{tmp}/d/"), "is a directory", {}),
    ("missing triggers file", "train", lambda tmp: files(tmp, triggers_path=f"{tmp}/none.json"),
     "task.params.triggers_path", {}),
    ("rule function missing", "train",
     lambda tmp: files(tmp, rule=rule_file(tmp, "def other(t):\n    return t\n") + ":rule"),
     "task.params.rule", {}),
    ("rule module missing", "train", lambda tmp: files(tmp, rule="no_such_module_xyz:fn"),
     "task.params.rule", {}),
    ("rule returns a number", "train",
     lambda tmp: files(tmp, rule=rule_file(tmp, "def rule(t):\n    return 3\n") + ":rule"),
     "task.params.rule", {}),
    ("holdout 1.5", "train", lambda tmp: files(tmp, holdout="1.5"), "task.params.holdout", {}),
    ("unknown match mode", "train", lambda tmp: files(tmp, match="fuzzy"), "task.params.match",
     {}),
    # -- commands and environment
    ("ui port 0", "ui", p("--port", "0"), "--port", {}),
    ("ui negative port", "ui", p("--port=-5"), "--port", {}),
    ("runs: unknown action", "runs", p("purge"), "purge", {}),
    ("resume id with symbols", "train", p("resume=not-a-run!"), "not-a-run!", {}),
    ("config dir is a file", "train", p(), "MEMGEN_CONF_DIR", {"MEMGEN_CONF_DIR": __file__}),
]


def rows(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select count(*) from runs").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def audit_one(case: Case, root: Path) -> dict:
    import memgen.commands.run
    from memgen.cli import main

    name, command, make, expected, env = case
    tmp = Path(tempfile.mkdtemp(dir=root))
    db = tmp / "mlruns" / "mlflow.db"
    store = [f"tracking.uri=sqlite:///{db}", f"output_dir={tmp}/outputs"]
    extra = make(tmp)
    argv = [command] + ([*extra, *store] if command == "runs" else
                        [*TINY, *store, *extra] if command != "ui" else [*store, *extra])

    def sentinel(*args, **kwargs):
        raise Accepted

    saved_job_run, saved_env = memgen.commands.run.job_run, dict(os.environ)
    memgen.commands.run.job_run = sentinel
    os.environ.update(env)
    err, out = io.StringIO(), io.StringIO()
    code: object
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(argv)
    except Accepted:
        code = "accepted"
    except BaseException as exc:  # noqa: BLE001 - a leak through the boundary is a finding
        code = f"raised {type(exc).__name__}"
    finally:
        memgen.commands.run.job_run = saved_job_run
        os.environ.clear()
        os.environ.update(saved_env)
    text = err.getvalue().strip()
    checks = {"exit 2": code == 2,
              "one line": text.startswith("memgen: error: ") and "\n" not in text,
              "no traceback": "Traceback" not in text + out.getvalue(),
              "no run row": rows(db) == 0,
              "key named": expected in text}
    return {"input": name, "argv": extra, "exit": code, "message": text[-400:],
            "clean": all(checks.values()), "failed": [k for k, ok in checks.items() if not ok]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="memgen-audit-") as root:
        results = [audit_one(case, Path(root)) for case in CASES]
    for r in results:
        mark = "clean" if r["clean"] else "NOT CLEAN (" + ", ".join(r["failed"]) + ")"
        print(f"{mark:<40} {r['input']:<36} {r['message'][:160]}")
    clean = sum(r["clean"] for r in results)
    print(f"\n{clean}/{len(results)} clean")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0 if clean == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
