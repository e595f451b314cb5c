"""`unirep explain BACKBONE --task T --protocol knn --examples first:8 --out DIR`: each test example's kNN decision
and the neighbours it rests on.

The probe is unirep's `knn` probe exactly as the `knn` protocol runs it (cosine similarity on L2-normalised cached
features, DINO's vote weight exp(sim / T), k chosen on val from the `knn.ks` candidates, then the index rebuilt on
train+val). Each neighbour is shown with its image (or spectrogram), id, split, label, cosine similarity, vote
weight and its share of all k votes; the decision is the class with the largest summed weight (the probe's own
`predict`, recorded next to it).
"""

from __future__ import annotations

import argparse
import html

import numpy as np

from unirep.explain import Explainer, register_explainer
from unirep.explain.case_page import figure, number, page, table, with_box
from unirep.explain.case_setup import build_setup, write_page

DEFAULT_SHOWN = 10


@register_explainer("knn")
class KNNExplainer(Explainer):
    help = "the k nearest training examples behind each kNN decision, with their vote weights"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("--protocol knn")
        group.add_argument("--neighbours", type=int, default=DEFAULT_SHOWN, metavar="N",
                           help="neighbours shown per example (the decision always uses all k)")

    def run(self, args: argparse.Namespace) -> int:
        from unirep.errors import ConfigError

        if args.neighbours < 1:
            raise ConfigError(f"--neighbours {args.neighbours}: show at least 1 neighbour")
        setup = build_setup(args)
        record, sections = explain_knn(setup, args.neighbours)
        lead = (f"kNN decisions of <b>{html.escape(setup.label)}</b> on <b>{html.escape(setup.task.name)}</b> "
                f"(k = {record['probe']['k']} chosen on val, vote weight exp(cos / {record['probe']['T']}), "
                "neighbours from train+val). Each example: the decision, the summed votes per class and its "
                f"{args.neighbours} nearest neighbours.")
        html_path, json_path = write_page(setup, page("kNN explanations", lead, sections,
                                                      setup.provenance(args, {"probe": record["probe"]})),
                                          setup.provenance(args, record))
        print(f"{html_path} ({len(setup.examples)} examples); numbers: {json_path}")
        return 0


def explain_knn(setup, shown: int) -> tuple[dict, list[str]]:
    from unirep.probes import FeatureSplit
    from unirep.probes.knn import _vote_sums
    from unirep.protocols import build_probe

    train_X, train_y = setup.features("train")
    val_X, val_y = setup.features("val")
    probe = build_probe("knn", setup.cfg)
    probe.select(FeatureSplit(train_X, train_y), FeatureSplit(val_X, val_y), setup.metric)
    fit_ids = [("train", i) for i in range(len(train_y))] + [("val", i) for i in range(len(val_y))]
    fit_labels = np.concatenate([train_y, val_y])
    test_X, test_y = setup.features("test")
    query = test_X[setup.examples]
    sims, neighbours = probe._search(query, probe.k_)  # the probe's own search: the neighbours its vote uses
    _, votes = next(_vote_sums(sims, probe.labels_[neighbours], len(probe.classes_), probe.T_, [probe.k_]))
    predicted = probe.predict(query)
    weights = np.exp(sims.astype(np.float64) / probe.T_)
    test_pixels = setup.pixels("test", setup.examples)
    wanted = {fit_ids[j] for j in neighbours[:, :shown].ravel()}
    thumbs = {}
    for split in ("train", "val"):
        indices = sorted(i for s, i in wanted if s == split)
        for i, pixels in zip(indices, setup.pixels(split, indices), strict=True):
            thumbs[(split, i)] = pixels
    cases, sections = [], []
    test_ids = setup.split("test").ids
    for row, index in enumerate(setup.examples):
        total = float(weights[row].sum())
        order = np.argsort(-votes[row], kind="stable")
        class_votes = [{"class": setup.class_name(int(probe.classes_[c])), "votes": float(votes[row, c]),
                        "share": float(votes[row, c] / total)} for c in order if votes[row, c] > 0]
        entries = []
        for rank, j in enumerate(neighbours[row]):
            split, i = fit_ids[j]
            entries.append({"rank": rank + 1, "id": setup.split(split).ids[i], "split": split,
                            "label": setup.class_name(int(fit_labels[j])), "similarity": float(sims[row, rank]),
                            "weight": float(weights[row, rank]), "share": float(weights[row, rank] / total)})
        case = {"id": test_ids[index], "label": setup.class_name(int(test_y[index])),
                "decision": setup.class_name(int(predicted[row])), "votes": class_votes, "neighbours": entries}
        cases.append(case)
        sections.append(knn_section(case, test_pixels[row], [thumbs[fit_ids[j]] for j in neighbours[row, :shown]],
                                    shown))
    probe_record = {"name": "knn", "k": int(probe.k_), "T": float(probe.T_), "val_score": float(probe.val_score_),
                    "val_sweep": {str(k): float(v) for k, v in probe.sweep_.items()}, "fit": "train+val",
                    "similarity": "cosine of L2-normalised features", "weight": "exp(similarity / T)"}
    return {"probe": probe_record, "cases": cases}, sections


def knn_section(case: dict, query, thumbs: list, shown: int) -> str:
    right = case["decision"] == case["label"]
    head = (f'<h2>{html.escape(case["id"])}</h2><p class="decision" data-decision="{html.escape(case["decision"])}">'
            f'decision: {html.escape(case["decision"])} (true: {html.escape(case["label"])}'
            f'{"" if right else ", wrong"})</p>')
    votes = table(["class", "summed weight", "share of votes"],
                  [[html.escape(v["class"]), number(v["votes"]), f"{100 * v['share']:.1f} %"] for v in case["votes"]],
                  "votes")
    figures = [figure(with_box(query), "query")]
    rows = []
    for entry, thumb in zip(case["neighbours"][:shown], thumbs, strict=True):
        caption = f"#{entry['rank']} {html.escape(entry['label'])}"
        figures.append(figure(with_box(thumb), caption, "neighbour"))
        rows.append([str(entry["rank"]), html.escape(entry["id"]), entry["split"], html.escape(entry["label"]),
                     number(entry["similarity"], 4), number(entry["weight"]), f"{100 * entry['share']:.1f} %"])
    neighbours = table(["#", "id", "split", "label", "cosine similarity", "vote weight exp(s/T)", "share of votes"],
                       rows, "neighbours")
    return (f'<section class="case{"" if right else " wrong"}" data-id="{html.escape(case["id"])}">{head}{votes}'
            f'<div>{"".join(figures)}</div>{neighbours}</section>')
