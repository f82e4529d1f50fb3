"""A small CPU schedule for the FP PrimFuncs Relax legalises (the student's non-binary rest).

Relax's default CPU pipeline leaves legalised ops as plain loop nests; for ReActNet the fused
elementwise chains (residual add + RPReLU + concat) and the stem conv then cost more than the
binary convs. Without tuning (MetaSchedule is not run), two safe rules:
  - spatial-only blocks: inline producers, then split the innermost loop by the vector width and
    vectorise it;
  - the stem-like conv2d / pooling reductions: move the output-width loop innermost and vectorise it.
Any rule that does not apply to a block is skipped; the XNOR kernels (bssl_*) are scheduled already.
"""

from __future__ import annotations


def _spatial_only(sch, block) -> bool:
    from tvm import tirx

    return all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(block).iter_vars)


def _vectorise_innermost(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    inner = loops[-1]
    extent = sch.get(inner).extent
    if not hasattr(extent, "value"):
        return
    n = int(extent.value)
    if n >= lanes and n % lanes == 0:
        _, vi = sch.split(inner, [None, lanes])
        sch.vectorize(vi)
    elif 1 < n <= 64:
        sch.vectorize(inner)


def _schedule_reduction(sch, block, lanes: int) -> None:
    """Spatial loops outside, reductions next, the last spatial (output width) innermost, vectorised."""
    from tvm import tirx

    loops = sch.get_loops(block)
    ivs = sch.get(block).iter_vars
    if len(loops) != len(ivs):
        return
    spatial = [lp for lp, iv in zip(loops, ivs) if iv.iter_type == tirx.IterVar.DataPar]
    reduce = [lp for lp, iv in zip(loops, ivs) if iv.iter_type == tirx.IterVar.CommReduce]
    if len(spatial) < 2 or not reduce:
        return
    width = sch.get(spatial[-1]).extent
    if not hasattr(width, "value") or int(width.value) < 4:
        return
    sch.reorder(*spatial[:-1], *reduce, spatial[-1])
    sch.decompose_reduction(block, reduce[0])
    upd = sch.get_loops(block)[-1]
    n = int(width.value)
    if n % lanes == 0 and n > lanes:
        _, vi = sch.split(upd, [None, lanes])
        sch.vectorize(vi)
    else:
        sch.vectorize(upd)


def schedule_func(func, lanes: int = 16):
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    try:
        root = sch.get_sblock("root")
    except Exception:
        return func
    blocks = sch.get_child_blocks(root)
    # Inline every spatial producer into its consumer (pads, broadcasts, intermediate elementwise).
    for blk in blocks[:-1]:
        if _spatial_only(sch, blk):
            try:
                sch.compute_inline(blk)
            except Exception:
                pass
    for blk in sch.get_child_blocks(root):
        try:
            if _spatial_only(sch, blk):
                _vectorise_innermost(sch, blk, lanes)
            else:
                _schedule_reduction(sch, blk, lanes)
        except Exception:
            continue
    return sch.mod["main"]


def schedule_fp_pass(lanes: int = 16):
    """A module pass scheduling every PrimFunc not made by bssl (name prefix bssl_)."""
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="BsslScheduleFP")
    def _pass(mod, _ctx):
        updates = {}
        for gv, func in mod.functions.items():
            if not isinstance(func, tirx.PrimFunc) or gv.name_hint.startswith("bssl_"):
                continue
            try:
                updates[gv] = schedule_func(func.with_attr("global_symbol", "main"), lanes).with_attr(
                    "global_symbol", func.attrs["global_symbol"] if func.attrs and "global_symbol" in func.attrs
                    else gv.name_hint)
            except Exception:
                continue
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return _pass


def cpu_pipeline(target, lanes: int = 16):
    """Relax's default CPU pipeline with the FP schedule after legalisation and fusion."""
    import tvm
    from tvm.relax.backend import cpu_generic

    @tvm.transform.module_pass(opt_level=0, name="BsslCPUPipeline")
    def _pipeline(mod, _ctx):
        with target:
            seq = tvm.transform.Sequential(
                cpu_generic.library_dispatch_passes(target)
                + cpu_generic.legalize_passes(target)
                + [schedule_fp_pass(lanes)]
                + cpu_generic.pipeline.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline
