"""`rsuper train`, `rsuper predict`, `rsuper evaluate`. No torch / MONAI at import time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from extract.cli_errors import fail, make_folder

_SET_HELP = "Override a config field, dotted (repeatable): --set optim.lr=1e-4 --set data.batch_size=4"


def register(app: typer.Typer) -> None:
    """Add the trainer commands to the `rsuper` app."""

    @app.command("train")
    def train(
        config: Optional[Path] = typer.Argument(None, help="YAML config (see configs/); defaults when omitted."),
        set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
        output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Same as --set output_dir=..."),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUTPUT/latest.pt if present."),
        allow_config_change: bool = typer.Option(
            False, "--allow-config-change", help="Resume even if the config or data fingerprint differs."
        ),
        max_steps: Optional[int] = typer.Option(None, help="Stop after this many more steps (schedule unchanged)."),
    ) -> None:
        """Train a segmentation network with mask and report supervision (single process or under torchrun)."""
        import logging

        from train.config import ConfigError, load_config
        from train.distributed import setup_distributed, teardown_distributed
        from train.factories import build_data
        from train.trainer import Trainer

        overrides = list(set_) + ([f"output_dir={output_dir}"] if output_dir else [])
        try:
            cfg = load_config(config, overrides)
        except ConfigError as exc:  # the message names the file or override and the field
            fail(str(exc))
        dist = setup_distributed(cfg.device, cfg.dist_timeout_s)
        logging.basicConfig(level=logging.INFO if dist.is_main else logging.WARNING, format="%(message)s")
        if not dist.is_main:
            logging.getLogger("rsuper.train").setLevel(logging.WARNING)
        try:
            # Rank 0 first: it may generate the phantom set and fill the cache that the other ranks then read.
            data = dist.in_turns(lambda: build_data(cfg))
            trainer = Trainer(cfg, data, dist, resume=resume, allow_config_change=allow_config_change)
            summary = trainer.fit(max_steps=max_steps)
            # Every rank done before any leaves: a rank tearing down while another still finishes its last
            # collective made gloo abort that one ("terminate called without an active exception").
            dist.barrier()
        finally:
            teardown_distributed()
        if dist.is_main:
            typer.echo(json.dumps(summary))
            out = Path(summary["output_dir"])
            typer.echo(f"results: {out}  (checkpoints latest.pt / best.pt, metrics.jsonl, val_png/, "
                       f"tensorboard --logdir {out / 'tensorboard'})")

    @app.command("predict")
    def predict(
        checkpoint: Path = typer.Argument(..., help="Checkpoint (best.pt / latest.pt) of a run."),
        inputs: Path = typer.Argument(..., help="A CT (.nii/.nii.gz), a folder of them, or case folders <id>/ct.nii.gz."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder: one sub-folder per CT."),
        overlap: float = typer.Option(0.5, min=0.0, max=0.95, help="Sliding-window overlap fraction."),
        probabilities: bool = typer.Option(False, "--probabilities", help="Also write lesion probabilities."),
        restrict_to_organ: bool = typer.Option(
            False, "--restrict-to-organ", help="Keep lesions only inside the predicted organ (+3 mm)."
        ),
        device: str = typer.Option("auto", help="auto, cpu or cuda."),
        pages: int = typer.Option(100, "--pages", min=0, help="Case pages (OUT/pages/index.html) for this many CTs, "
                                  "the most predicted lesion volume first; 0: none."),
    ) -> None:
        """Sliding-window inference; NIfTI masks in each input's own geometry, a per-CT summary.json and case pages
        (slices through every predicted lesion; `rsuper audit` adds the report's side)."""
        import torch
        from tqdm import tqdm

        from train.predict import find_inputs, load_network, predict_case

        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise typer.BadParameter(f"{device!r}: expected auto, cpu, cuda or cuda:N", param_hint="--device")
        dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                           ("cpu" if device == "auto" else device))
        cases = find_inputs(inputs)  # before the network: a wrong INPUTS or --out costs no checkpoint load
        make_folder(out)
        net, cfg = load_network(checkpoint, dev)
        bar = tqdm(cases, desc="predict", unit="CT", disable=True if len(cases) < 2 else None)  # None: on a terminal
        for ct_id, path in bar:
            predict_case(net, cfg, path, out / ct_id, overlap=overlap, device=dev,
                         save_probabilities=probabilities, restrict_lesions_to_organ=restrict_to_organ)
            bar.write(f"{ct_id}: {out / ct_id}")
        result = {"predicted": len(cases), "out": str(out)}
        if pages:
            from train.review.config import AuditConfig
            from train.review.files import audit_folder, page_arrays
            from train.review.pages import write_pages

            found = [audit_folder(out / ct_id, None, AuditConfig()) for ct_id, _ in cases]
            found.sort(key=lambda r: (-sum(p.volume_mm3 for p in r.lesions), r.prediction.ct_id))
            result["pages"] = str(write_pages(found, out / "pages", arrays_of=page_arrays, max_pages=pages,
                                              progress=len(cases) > 1))
        typer.echo(json.dumps(result))

    @app.command("evaluate")
    def evaluate(
        predictions: Path = typer.Argument(..., help="Output folder of `rsuper predict`."),
        truth: Path = typer.Option(..., "--truth", help="Case root with <id>/lesions.nii.gz (or cases/<id>/) and "
                                   "case_reports.csv (ct_id, report_id)."),
        records: str = typer.Option("truth", help="Report records: truth (ground_truth.jsonl in --truth) or store."),
        db: Optional[Path] = typer.Option(None, "--db", help="DuckDB store for --records store."),
        tolerance_mm: float = typer.Option(2.0, help="NSD tolerance in mm."),
        threshold_mm3: float = typer.Option(100.0, help="Operating-point lesion volume threshold (mm3)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write evaluation.json / .png "
                                           "(default: the predictions folder)."),
    ) -> None:
        """Voxel metrics (Dice, NSD) where masks exist and per-CT detection against report records."""
        from train.config import DataConfig
        from train.data.labels import load_label_names
        from train.datasource import load_records
        from train.evaluate import (
            evaluate_detection, format_table, plot_detection, read_mapping, report_truth, summarise_voxel,
            voxel_metrics_for_case,
        )

        if records not in ("truth", "store"):
            raise typer.BadParameter(f"{records!r}: expected truth or store", param_hint="--records")
        if not truth.is_dir():
            fail(f"{truth}: {'not a folder' if truth.exists() else 'no such folder'} (--truth: the case root with "
                 "the lesion masks and case_reports.csv)")
        summaries = {}
        for path in sorted(predictions.glob("*/summary.json")):
            try:
                summaries[path.parent.name] = json.loads(path.read_text())
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: a cut or foreign file
                fail(f"{path}: not a summary of `rsuper predict` ({exc}); predict that CT again")
        if not summaries:
            fail(f"{predictions}: no */summary.json (run `rsuper predict` first)")
        dest = out or predictions
        make_folder(dest)
        case_root = truth / "cases" if (truth / "cases").is_dir() else truth
        lesion_file = truth / "lesion_labels.json"
        per_case = {}
        if lesion_file.is_file():
            names = load_label_names(lesion_file)
            for ct_id in summaries:
                mask = case_root / ct_id / "lesions.nii.gz"
                if mask.is_file():
                    per_case[ct_id] = voxel_metrics_for_case(predictions / ct_id, mask, names, tolerance_mm)
        voxel = summarise_voxel(per_case)
        detection = {}
        mapping_file = truth / "case_reports.csv"
        if mapping_file.is_file():
            mapping = read_mapping(mapping_file)
            cfg = DataConfig(root=truth, records=records, db=db)
            recs = load_records(cfg, truth, list(mapping.values()))
            organs = sorted({o for s in summaries.values() for o in s["organs"]})
            detection = evaluate_detection(summaries, report_truth(recs, mapping, organs), threshold_mm3)
        result = {"tolerance_mm": tolerance_mm, "threshold_mm3": threshold_mm3, "voxel": voxel,
                  "voxel_per_case": per_case, "detection": detection}
        (dest / "evaluation.json").write_text(json.dumps(result, indent=1))
        if detection:
            plot_detection(detection, dest / "evaluation.png")
        typer.echo(format_table(voxel, detection, tolerance_mm))
        typer.echo(f"written: {dest / 'evaluation.json'}" + (f", {dest / 'evaluation.png'}" if detection else ""))
