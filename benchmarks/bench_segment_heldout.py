"""Held-out comparison of segment methods, measured once (docs/segmentation.md): 4 crops of the held-out pinky40 block in the held-back sem style
(seed 2024, as train_seg.sanity_scores), watershed baseline vs affinities + agglomerate (default threshold)."""
import numpy as np, time, json
from neurorecon.synth.em import HELDOUT_STYLE, PINKY40_VOXEL_NM, STYLES, load_pinky40, nucleus_mask, pinky40_split, random_crop, render_em
from neurorecon.em.segment import segment
from neurorecon.em.unet import load_affinity_model
from neurorecon.em.metrics import voi, adapted_rand_error
labels, _ = load_pinky40()
model = load_affinity_model()
vs = tuple(v / 1000 for v in PINKY40_VOXEL_NM[::-1])
rng = np.random.default_rng(2024)
regions = pinky40_split(labels, "heldout")
rows = []
for i in range(4):
    lab, origin = random_crop(regions, (32, 192, 192), rng)
    r = render_em(lab, STYLES[HELDOUT_STYLE], rng, nucleus=nucleus_mask(lab))
    for m in ("watershed", "affinities"):
        t = time.time(); s = segment(r.image, vs, method=m, **({"model": model} if m == "affinities" else {})); dt = time.time() - t
        a, b = voi(s, r.labels); e = adapted_rand_error(s, r.labels)[0]
        rows.append(dict(crop=i, origin=[int(v) for v in origin], method=m, voi_split=a, voi_merge=b, voi=a + b, arand=e, seconds=dt))
        print(rows[-1], flush=True)
for m in ("watershed", "affinities"):
    v = np.array([[r["voi_split"], r["voi_merge"], r["voi"], r["arand"], r["seconds"]] for r in rows if r["method"] == m])
    print(m, "mean VOI split %.2f merge %.2f VOI %.2f ARand %.3f s/crop %.1f" % tuple(v.mean(0)))
print(json.dumps(rows, indent=1))
