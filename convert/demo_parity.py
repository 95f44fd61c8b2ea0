"""The demo's parity table: the independent reference vs each runtime, at short and long lengths."""

from __future__ import annotations

from longrope_convert.formats.factor_set import FactorSet

DEMO_LENGTHS = (200, 600)  # one short (<= L_orig 256), one long
F32_REL_L2 = 1e-5


def demo_parity_table(models) -> tuple[str, bool]:
    import torch

    from longrope_convert.verify.metrics import compare_logits
    from longrope_convert.verify.reference_model import ReferenceDecoder
    from longrope_convert.verify.transformers_runner import load_transformers_model, transformers_logits

    rows = [f"{'model':<20} {'target':<14} {'tokens':>6} {'set':<6} {'rel L2':>10} {'max |d|':>10} {'top-1':>6}  ok"]
    all_pass = True
    for m in models:
        reference = ReferenceDecoder(m.baked, torch.float64)
        hf_model = load_transformers_model(m.baked)
        for length in DEMO_LENGTHS:
            ids = torch.randint(0, reference.geo.vocab_size, (1, length), generator=torch.Generator().manual_seed(length))
            ref = reference.forward(ids)
            cmp = compare_logits(ref.logits, transformers_logits(hf_model, ids))
            ok = cmp.relative_l2 <= F32_REL_L2 and cmp.top1_agreement == 1.0
            all_pass &= ok
            rows.append(f"{m.hf_class:<20} {'transformers':<14} {length:>6} {ref.factor_set.value:<6} "
                        f"{cmp.relative_l2:>10.2e} {cmp.max_abs_diff:>10.2e} {cmp.top1_agreement:>6.0%}  "
                        f"{'PASS' if ok else 'FAIL'}")
    return "\n".join(rows), all_pass
