"""`hcsi report`, `hcsi gallery`, `hcsi compare`: tables and figures from evaluation folders."""
from __future__ import annotations

import argparse
import json
import sys

from .options import at_least, image_out_option, threshold_option


def _report(args: argparse.Namespace) -> int:
    from ..evaluate.report import ablation_table, collect_aucs, coverage_table, cross_dataset_table

    table = collect_aucs(args.results)
    print(cross_dataset_table(table))
    print()
    print(coverage_table(args.results))
    if args.ablation:
        print()
        print(ablation_table(table, args.reference))
    if args.roc:
        from ..evaluate.figures import report_roc

        print("wrote " + ", ".join(map(str, report_roc(args.results, args.roc))), file=sys.stderr)
    return 0


def _gallery(args: argparse.Namespace) -> int:
    from ..evaluate.figures import gallery

    print(f"wrote {gallery(args.result, args.out, args.n, args.threshold)}", file=sys.stderr)
    return 0


def _parse_aucs(items: list[str]) -> dict[str, float]:
    aucs = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            aucs[name.lower()] = float(value)
        except ValueError:
            raise ValueError(f"--auc {item}: expected dataset=percent, e.g. cdf=90.45") from None
    return aucs


def _compare(args: argparse.Namespace) -> int:
    from ..evaluate.compare import compare_with_baselines, dumbbell_plot, format_comparison, read_baselines
    from ..evaluate.report import collect_aucs

    if bool(args.results) == bool(args.auc):
        raise ValueError("give either evaluation results (folders or summary.json files) or --auc, not both")
    if args.results:
        table = collect_aucs(args.results)
        if len(table) != 1:
            raise ValueError(f"the results are of {len(table)} models ({', '.join(table)}); compare one at a time")
        label, ours = next(iter(table.items()))
    else:
        label, ours = args.label or "ours", _parse_aucs(args.auc)
    rows = compare_with_baselines(ours, read_baselines(args.baselines))
    print(json.dumps(rows, indent=1) if args.json else format_comparison(ours, rows))
    if args.results:  # point estimates above; how far each can be trusted below
        from ..evaluate.report import interval_widths

        widths = interval_widths(args.results)
        print("AUC 95 % interval width per dataset (bootstrap over videos; a difference smaller than this is not "
              "established): " + ", ".join(f"{d} {w:.1f} points" if w is not None else f"{d} not computed"
                                           for d, w in widths.items()), file=sys.stderr)
    if args.plot:
        written = dumbbell_plot(rows, args.plot, label=args.label or label)
        print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """report, gallery, compare."""
    report = commands.add_parser("report", help="cross-dataset table (Table II layout) from evaluation outputs")
    report.add_argument("results", nargs="+", help="`hcsi evaluate` output folders or their summary.json")
    report.add_argument("--ablation", action="store_true", help="also the Table III table (mean AUC and Δ)")
    report.add_argument("--reference", help="the ablation's reference model (default hcsi_net)")
    report.add_argument("--roc", metavar="PATH", help="also draw every result's ROC curve in one figure (.png + .svg)")
    report.set_defaults(run=_report)

    gallery = commands.add_parser("gallery", help="the most confident false positives and negatives of an evaluation",
                                  description="Fig. 5-style picture: for each case the face crop that decided the "
                                              "video (stored by hcsi evaluate), its score, label and file name.",
                                  parents=[threshold_option(), image_out_option()])
    gallery.add_argument("result", help="an `hcsi evaluate` output folder")
    gallery.add_argument("--n", type=at_least(1), default=8, help="cases of each kind (default 8)")
    gallery.set_defaults(run=_gallery)

    compare = commands.add_parser("compare", help="subset-matched comparison with Table II's baselines (Eq. 17)")
    compare.add_argument("results", nargs="*", help="`hcsi evaluate` output folders of one model")
    compare.add_argument("--auc", nargs="+", metavar="DATASET=PERCENT",
                         help="AUCs in percent instead, e.g. ff++=99.31 cdf=90.45 dfd=97.84")
    compare.add_argument("--baselines", help="CSV of baselines (method,venue,ff++,cdf,...); default Table II")
    compare.add_argument("--json", action="store_true", help="print the rows as JSON")
    compare.add_argument("--plot", help="write Fig. 4 (dumbbell plot) to this path as .png and .svg")
    compare.add_argument("--label", help="name of our model in the plot (default: the results' model label)")
    compare.set_defaults(run=_compare)
