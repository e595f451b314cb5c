"""`unirep explain BACKBONE --task TASK --examples first:8 --out DIR [--protocol knn|prototype]`: a page showing,
for each chosen test example, the decision and the evidence it rests on (kNN neighbours, prototypes and their
source patches, or, for a detection task, the detector's saliency per detection).

The common options are defined here; each registered explainer (unirep.explain) adds its own. Dispatch: a
detection task goes to the explainer "detections", any other task to the explainer named by --protocol.
BACKBONE and key=value items are as for `unirep inspect` (eval settings such as max_input_size=64 or cache_dir=...).
"""

from __future__ import annotations

import argparse

from unirep.commands import Command, register_command
from unirep.commands.backbone_options import add_backbone_options, require_options


@register_command("explain")
class ExplainCommand(Command):
    help = ("Show the evidence for decisions on chosen test examples: kNN neighbours or prototypes (--protocol "
            "knn|prototype), detector saliency on a detection task. Writes DIR/explain.html.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from unirep.explain import CASE_PROTOCOLS, EXPLAINERS, import_explainers

        parser.add_argument("items", nargs="*", metavar="BACKBONE|KEY=VALUE",
                            help="the backbone (for a detection task: the detector) and key=value eval settings "
                                 "(max_input_size=64, cache_dir=...)")
        # --task and --out are required, checked in `run` (backbone_options.require_options), not by argparse.
        parser.add_argument("--task", help="the task (see `unirep list tasks`); required")
        parser.add_argument("--examples", default="first:8", metavar="IDS|first:N",
                            help="test examples to explain: ids (comma-separated) or first:N")
        parser.add_argument("--out", help="folder for explain.html (and its numbers); required")
        parser.add_argument("--protocol", choices=CASE_PROTOCOLS,
                            help="whose decision to explain on a classification task")
        parser.add_argument("--seed", type=int, default=0, help="seed of the probe fit and of random choices")
        parser.add_argument("--task-card", action="append", default=[], metavar="YAML",
                            help="a custom task card (see tasks/README.md); repeatable")
        add_backbone_options(parser)
        import_explainers()
        for name in EXPLAINERS:
            EXPLAINERS.get(name).add_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        from unirep.explain import explainer_name, get_explainer
        from unirep.tasks import create_task
        from unirep.tasks.custom import add_task_card

        require_options(args, "explain", ("task", "out"),
                        "unirep explain BACKBONE --task sklearn-digits --protocol knn --out runs/explain")
        for card in args.task_card:
            add_task_card(card)
        task = create_task(args.task)  # an unknown name: one line with close names
        kind = getattr(task, "kind", "classification")
        explainer = get_explainer(explainer_name(kind, args.protocol), args.task)
        return int(explainer().run(args) or 0)
