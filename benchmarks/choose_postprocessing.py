"""Choosing the post-processing of the affinity model on the validation crops (training region, z >= 448);
the table in docs/segmentation.md. Run: PYTHONPATH=src .venv/bin/python benchmarks/choose_postprocessing.py"""
import numpy as np, time
from neurorecon.synth.em import PINKY40_VOXEL_NM, EMStyle, load_pinky40, nucleus_mask, random_crop, render_em
from neurorecon.em.train_seg import training_regions, VALID_FROM, watershed_segment
from neurorecon.em.unet import load_affinity_model, predict_affinities
from neurorecon.em.agglomerate import agglomerate
from neurorecon.em.metrics import voi, adapted_rand_error
labels, _ = load_pinky40()
model = load_affinity_model()
vs = tuple(v / 1000 for v in PINKY40_VOXEL_NM[::-1])
rng = np.random.default_rng(2024)
regions, _ = training_regions(labels, (VALID_FROM, labels.shape[0]))
res = {}
for i in range(4):
    lab, origin = random_crop(regions, (32, 192, 192), rng)
    r = render_em(lab, EMStyle.random(rng), rng, nucleus=nucleus_mask(lab))
    aff = predict_affinities(r.image, model, vs)
    segs = {"model_ws": watershed_segment(aff)}
    for th in (0.5, 0.6, 0.7, 0.8, 0.9):
        t = time.time(); segs[f"agg{th}"] = agglomerate(aff, model.meta["offsets"], threshold=th); 
    for k, s in segs.items():
        a, b = voi(s, r.labels); e = adapted_rand_error(s, r.labels)[0]
        res.setdefault(k, []).append((a + b, e))
for k, v in res.items():
    v = np.array(v); print(k, "VOI %.2f ARand %.3f" % tuple(v.mean(0)))
