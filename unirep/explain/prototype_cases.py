"""`unirep explain BACKBONE --task T --protocol prototype --examples first:8 --out DIR [--prototype-band]`: each
test example's prototype-probe decision ("this looks like that") and its evidence.

The probe is fitted exactly as the `prototype` (or, with --prototype-band, `prototype-band`) protocol fits it
(unirep.prototypes: maps from the feature cache, grid chosen on val, refit on train+val, projection, pruning);
`prototype.KEY=VALUE` items change its settings. Per example: the decision and the class logits; the top
prototypes by their contribution W[c, j] s_j to the predicted class's logit, each with its source training patch
(ProtoPNet's high-activation box of the prototype's similarity map on its source image; for band prototypes the
band's rows), and its similarity map over the input (with the box the faithfulness check masks). The page ends
with the masking check (unirep.prototypes.faithfulness) over the first --faithfulness test images.
"""

from __future__ import annotations

import argparse
import html
import time

import torch

from unirep.errors import ConfigError
from unirep.explain import Explainer, register_explainer
from unirep.explain.case_page import figure, heat_overlay, number, page, table, with_box
from unirep.explain.case_setup import build_setup, write_page

DEFAULT_TOP = 3
DEFAULT_FAITHFULNESS = 100


@register_explainer("prototype")
class PrototypeExplainer(Explainer):
    help = "the prototypes behind each prototype-probe decision, their source training patches and similarity maps"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("--protocol prototype")
        group.add_argument("--prototype-band", action="store_true",
                           help="the position-aware probe (prototype-band: each prototype keeps its frequency band)")
        group.add_argument("--top-prototypes", type=int, default=DEFAULT_TOP, metavar="N",
                           help="prototypes shown per example (by contribution to the predicted class)")
        group.add_argument("--faithfulness", type=int, default=DEFAULT_FAITHFULNESS, metavar="N",
                           help="test images of the masking check (0: none)")

    def run(self, args: argparse.Namespace) -> int:
        if args.top_prototypes < 1 or args.faithfulness < 0:
            raise ConfigError(f"--top-prototypes must be >= 1 and --faithfulness >= 0, got {args.top_prototypes} and "
                              f"{args.faithfulness}")
        setup = build_setup(args)
        record, sections = explain_prototypes(setup, args.prototype_band, args.top_prototypes, args.faithfulness)
        name = "prototype-band" if args.prototype_band else "prototype"
        lead = (f"{name} decisions of <b>{html.escape(setup.label)}</b> on <b>{html.escape(setup.task.name)}</b> "
                f"at {record['probe']['layer']} (maps {'x'.join(map(str, record['probe']['map_shape']))}, "
                f"{record['probe']['prototypes']} prototypes after pruning {record['probe']['pruned']}). Each example: "
                "the decision, and the prototypes that contributed most to it, with the training patch each was "
                "projected onto and where it matches the input.")
        summary = {k: v for k, v in record.items() if k != "cases"}
        html_path, json_path = write_page(setup, page("Prototype explanations", lead, sections,
                                                      setup.provenance(args, summary)),
                                          setup.provenance(args, record))
        print(f"{html_path} ({len(setup.examples)} examples); numbers: {json_path}")
        return 0


def fit_probe(setup, band: bool):
    """(SpatialMaps source, fitted PrototypeProbe, fit-set (split, index) list, seconds) as the protocol fits it."""
    from unirep.prototypes.maps import SpatialMaps, choose_stage, split_maps
    from unirep.prototypes.protocol import settings_from_dict
    from unirep.prototypes.train import PrototypeProbe

    settings = settings_from_dict(setup.sections.get("prototype", {}))
    stage, name = choose_stage(setup.backbone, settings.layer or setup.task.card.extra.get("feature_layer"),
                               settings.min_rows)
    source = SpatialMaps(setup.backbone, stage, name)
    data = {s: split_maps(source, setup.split(s), setup.extraction, setup.cache, setup.task.manifest, s)
            for s in ("train", "val")}
    start = time.perf_counter()
    probe = PrototypeProbe(setup.task.card.num_classes, settings, band, setup.seed).select(data["train"], data["val"],
                                                                                          setup.metric)
    seconds = time.perf_counter() - start
    fit_ids = [("train", i) for i in range(len(data["train"]))]
    if probe.fit_examples_ == "train+val":
        fit_ids += [("val", i) for i in range(len(data["val"]))]
    return source, probe, fit_ids, seconds


def explain_prototypes(setup, band: bool, top: int, faithfulness: int) -> tuple[dict, list[str]]:
    from unirep.prototypes.faithfulness import PrototypeClassifier, high_similarity_box, masking_check, top_prototype

    source, probe, fit_ids, fit_seconds = fit_probe(setup, band)
    head = probe.fitted_.head
    classifier = PrototypeClassifier(source, head)
    projection = probe.fitted_.projection
    size = setup.backbone.data_config.input_size
    rows = source.map_shape[1]
    sources = [fit_ids[int(e)] for e in projection.example]
    test = setup.split("test")
    test_pixels = setup.pixels("test", setup.examples)
    logits, similarity = classifier(test_pixels) if len(test_pixels) else (None, None)
    cases, sections, source_cache = [], [], {}
    for row, index in enumerate(setup.examples):
        predicted, _, contributions = top_prototype(logits[row], similarity[row], head)
        order = torch.argsort(contributions, descending=True, stable=True)[:top].tolist()
        evidence = []
        for j in order:
            split, i = sources[j]
            if (split, i) not in source_cache:
                pixels = setup.pixels(split, [i])
                source_cache[(split, i)] = (pixels[0], classifier(pixels)[1][0])
            source_pixels, source_similarity = source_cache[(split, i)]
            band_rows = None
            if head.band is not None:
                r = int(head.band_row[j])
                band_rows = (max(r - head.band, 0) * size // rows, min(r + head.band + 1, rows) * size // rows)
            evidence.append({
                "prototype": j, "class": setup.class_name(int(head.prototype_class[j])),
                "similarity": float(similarity[row, j].max()),
                "weight": float(head.last_layer.weight[predicted, j].detach()),
                "contribution": float(contributions[j]), "source_id": setup.split(split).ids[i],
                "source_split": split,
                "source_cell": [int(projection.row[j]), int(projection.col[j])],
                "source_box": list(high_similarity_box(source_similarity[j], size)),
                "input_box": list(high_similarity_box(similarity[row, j], size)), "band_pixel_rows": band_rows,
                "_source_pixels": source_pixels, "_map": similarity[row, j]})
        class_logits = sorted(((float(v), c) for c, v in enumerate(logits[row].tolist())), reverse=True)
        case = {"id": test.ids[index], "label": setup.class_name(int(test.labels[index])),
                "decision": setup.class_name(predicted),
                "logits": [{"class": setup.class_name(c), "logit": v} for v, c in class_logits[:5]],
                "evidence": evidence}
        sections.append(prototype_section(case, test_pixels[row]))
        for entry in evidence:
            entry.pop("_source_pixels")
            entry.pop("_map")
        cases.append(case)
    check = None
    if faithfulness:
        count = min(faithfulness, len(test))
        check = masking_check(classifier, setup.pixels("test", list(range(count))), seed=setup.seed)
        sections.append(faithfulness_section(check))
    fitted = probe.fitted_
    probe_record = {"name": "prototype-band" if band else "prototype", "layer": source.layer,
                    "map_shape": list(source.map_shape), "selected": probe.selected_params_,
                    "val_score": probe.val_score_, "val_sweep": probe.sweep_, "fit": probe.fit_examples_,
                    "prototypes": head.num_prototypes, "pruned": projection.pruned,
                    "band": head.band, "time_window": head.time_window, "fit_seconds": round(fit_seconds, 3),
                    "settings": probe.settings.to_dict(), "curve": fitted.curve}
    return {"probe": probe_record, "cases": cases, "faithfulness": check}, sections


def prototype_section(case: dict, pixels: torch.Tensor) -> str:
    right = case["decision"] == case["label"]
    head = (f'<h2>{html.escape(case["id"])}</h2><p class="decision" data-decision="{html.escape(case["decision"])}">'
            f'decision: {html.escape(case["decision"])} (true: {html.escape(case["label"])}'
            f'{"" if right else ", wrong"})</p>')
    logits = table(["class", "logit"], [[html.escape(e["class"]), number(e["logit"], 4)] for e in case["logits"]],
                   "logits")
    blocks = []
    for rank, entry in enumerate(case["evidence"], 1):
        source = figure(with_box(entry["_source_pixels"], entry["source_box"], band_rows=entry["band_pixel_rows"]),
                        f"source: {html.escape(entry['source_id'])} ({entry['source_split']})", "source")
        match = figure(heat_overlay(pixels, entry["_map"], entry["input_box"]), "similarity over the input",
                       "similarity")
        numbers = table(["prototype", "class", "similarity", "weight", "contribution"],
                        [[str(entry["prototype"]), html.escape(entry["class"]), number(entry["similarity"], 4),
                          number(entry["weight"], 4), number(entry["contribution"], 4)]])
        blocks.append(f'<div class="evidence"><h3>#{rank}: prototype {entry["prototype"]} '
                      f'({html.escape(entry["class"])})</h3>{figure(with_box(pixels), "input")}{source}{match}'
                      f"{numbers}</div>")
    return (f'<section class="case{"" if right else " wrong"}" data-id="{html.escape(case["id"])}">{head}{logits}'
            f'{"".join(blocks)}</section>')


def faithfulness_section(check: dict) -> str:
    s = check["summary"]
    rows = []
    for key, name in (("logit", "logit"), ("probability", "softmax probability")):
        v = s[key]
        rows.append([name, number(v["mean_evidence_drop"], 4), number(v["mean_random_drop"], 4),
                     f"{number(v['mean_difference'], 4)} [{number(v['difference_ci95'][0], 3)}, "
                     f"{number(v['difference_ci95'][1], 3)}]",
                     f"{100 * v['share_evidence_larger']:.1f} % [{100 * v['share_ci95'][0]:.1f}, "
                     f"{100 * v['share_ci95'][1]:.1f}]"])
    return ('<section class="faithfulness"><h2>Faithfulness: masking the evidence</h2>'
            f"<p>Over the first {s['n']} test images: the top prototype's high-similarity box (mean "
            f"{100 * s['mean_area_share']:.1f} % of the image) set to the mean colour, against a box of the same size "
            f"at a random position ({check['settings']['random_draws']} draws per image). Drop of the predicted "
            "class's score; 95 % intervals: bootstrap (difference), Wilson (share).</p>"
            + table(["score", "mean drop, evidence", "mean drop, random", "difference [95 % CI]",
                     "evidence drop larger [95 % CI]"], rows, "faithfulness-table") + "</section>")
