"""The language-model task of a run: TBPTT training, then perplexity, calibration, uncertainty,
the reversed-text test, dynamic evaluation and the pruning curve."""

from __future__ import annotations

from bayesrnn.app.ood_task import PLOT_NAME, OODText, compare, lm_sentences
from bayesrnn.app.run_data import checkpoint_tags
from bayesrnn.app.run_dir import (
    RunDir,
)
from bayesrnn.app.setup import (
    Log,
    Setup,
    seed_everything,
)
from bayesrnn.evaluation import (
    plot_entropy_histograms,
    plot_pruning_curve,
    plot_reliability_diagram,
)
from bayesrnn.evaluation.pruning import pruning_curve
from bayesrnn.evaluation.stream_report import language_model_report
from bayesrnn.inference import SharpenedGuide, TBPTTTrainer, sharpened_bound
from bayesrnn.inference.prediction.dynamic import dynamic_evaluate
from bayesrnn.inference.prediction.predictive import safe_exp
from bayesrnn.inference.runtime.distributed import Ranks


def train_language_model(s: Setup, run: RunDir, log: Log) -> dict:
    trainer = TBPTTTrainer(
        s.model,
        s.guide,
        s.corpus.train,
        s.corpus.valid,
        s.config.trainer,
        checkpoint_path=run.checkpoint,
    )
    trainer.checkpoint_tags = checkpoint_tags(s.corpus)
    if run.checkpoint.is_file():
        log(f"resuming from {run.checkpoint}")
    history = trainer.fit(resume=True)
    # fit() checkpoints every N windows and at epoch ends; a max_windows stop may fall between.
    trainer.save_checkpoint()
    return history.to_dict()


def evaluate_language_model(
    s: Setup,
    history: dict,
    run: RunDir,
    log: Log,
    ranks: Ranks | None = None,
    ood: OODText | None = None,
) -> dict:
    """The LM's scores on the evaluation split. Under torch.distributed every rank calls this:
    the forward, reversed and MC passes are shared out (``ranks``); rank 0 alone adds the
    sharpened bound, dynamic evaluation and pruning and draws the plots (the others get {}).
    ``ood``: a named text compared sentence by sentence with the split (``"ood_file"``)."""
    ranks = ranks or Ranks()
    ev, tr = s.config.evaluation, s.config.trainer
    if tr.eval_batch_size % ranks.world:  # not evenly shared: rank 0 scores everything
        if not ranks.is_main:
            return {}
        ranks = Ranks()
    stream = s.corpus.split(ev.split)
    if ev.max_tokens is not None:
        stream = stream[: ev.max_tokens]
    seed_everything(tr.seed + 1)
    guide = s.guide
    log(
        f"evaluating {ev.split} ({stream.numel()} tokens): posterior mean, "
        f"MC with {ev.mc_samples} samples" + (", reversed text" if ev.reversed_text else "")
    )
    report = language_model_report(
        s.model,
        guide,
        stream,
        num_samples=ev.mc_samples,
        batch_size=tr.eval_batch_size,
        bptt=tr.bptt,
        n_bins=ev.n_bins,
        strategy=ev.bin_strategy,
        reversed_text=ev.reversed_text,
        sharpened=False,
        ranks=ranks,
        decoder=ev.mc_decoder,
        recurrent_draws=ev.mc_recurrent_draws,
    )
    if not ranks.is_main:
        return {}
    metrics = report.metrics()
    if isinstance(s.guide, SharpenedGuide) and ev.sharpened_bound:
        bound = sharpened_bound(
            s.model,
            s.guide,
            stream,
            num_samples=max(2, ev.mc_samples),
            batch_size=tr.eval_batch_size,
            bptt=tr.bptt,
        )
        # exp() of a loose bound may overflow: the per-token NLL bound and its SE come too
        metrics.update(bound.metrics())
    if ev.dynamic_lr is not None:
        log(f"dynamic evaluation of {ev.split} (lr {ev.dynamic_lr})")
        dynamic = dynamic_evaluate(
            s.model,
            s.guide,
            stream,
            lr=ev.dynamic_lr,
            batch_size=tr.eval_batch_size,
            bptt=tr.bptt,
        )
        metrics["dynamic_lr"] = ev.dynamic_lr
        metrics["nll_dynamic"] = dynamic.nll_per_token
        metrics["perplexity_dynamic"] = safe_exp(dynamic.nll_per_token)
    plot_reliability_diagram(report.mc.bins, run / "reliability.png", title="MC predictive")
    files = ["reliability.png"]
    if report.reversed_mc is not None:
        plot_entropy_histograms(
            report.mc.token_entropy,
            report.reversed_mc.token_entropy,
            run / "entropy.png",
            labels=("forward text", "reversed text"),
        )
        files.append("entropy.png")
    out = {ev.split: metrics}
    if s.config.guide.is_gaussian and ev.pruning:
        pruning = _pruning(s, log)
        out["pruning"] = pruning
        plot_pruning_curve(pruning["fractions"], pruning["perplexities"], run / "pruning.png")
        files.append("pruning.png")
    out["plots"] = files
    if ood is not None:
        log(f"scoring {ood.name} ({ood.lines} lines) against {ev.split}, sentence by sentence")
        # the split again, every draw kept for the whole text, as the named text is scored
        inside = lm_sentences(s, stream, batch_size=s.config.trainer.eval_batch_size)
        compared = compare(s, ood, inside, stream)
        out["ood_file"] = compared.metrics
        compared.plot(run / PLOT_NAME)
        out["plots"].append(PLOT_NAME)
    return out


def _pruning(s: Setup, log: Log) -> dict:
    ev, tr = s.config.evaluation, s.config.trainer
    log(f"pruning curve on valid at fractions {list(ev.pruning_fractions)}")
    curve = pruning_curve(
        s.model,
        s.guide,
        s.corpus.valid,
        fractions=ev.pruning_fractions,
        batch_size=tr.eval_batch_size,
        bptt=tr.bptt,
    )
    return {
        "split": "valid",
        "fractions": list(curve.fractions),
        "perplexities": list(curve.perplexities),
        "zeroed": list(curve.zeroed),
        "total_weights": curve.total,
    }
