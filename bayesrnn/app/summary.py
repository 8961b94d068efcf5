"""A few human-readable lines of a run's results (the full set is in metrics.json)."""

from __future__ import annotations

from typing import Any


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summarise(metrics: dict[str, Any], out: str) -> str:
    """A few human-readable lines of the results; the full set is in metrics.json."""
    lines = [f"results in {out}/"]
    if metrics.get("posterior"):
        lines.append(f"  posterior: {metrics['posterior']}")
    training = metrics.get("training", {})
    if training.get("valid_perplexity"):
        lines.append(
            f"  valid perplexity by epoch: {[round(v, 2) for v in training['valid_perplexity']]}"
        )
    for split in ("test", "valid"):
        result = metrics.get(split)
        if not isinstance(result, dict):
            continue
        if "baselines" in result:
            lines += _forecast_lines(split, result)
            continue
        if "perplexity_mean" in result:
            mc = result["mc"]
            lines.append(
                f"  {split} perplexity: {fmt(result['perplexity_mean'])} (posterior mean), "
                f"{fmt(result['perplexity_mc'])} (MC, {result['mc_samples']} samples)"
            )
            if "perplexity_dynamic" in result:
                lines.append(
                    f"  dynamic evaluation (lr {result['dynamic_lr']}): perplexity "
                    f"{fmt(result['perplexity_dynamic'])} (posterior mean, adapted per window)"
                )
            if "nll_sharpened_bound" in result:
                lines.append(
                    f"  sharpened bound: perplexity <= {fmt(result['perplexity_sharpened_bound'])}"
                    f" (NLL <= {fmt(result['nll_sharpened_bound'])} nats/token,"
                    f" Monte Carlo SE {fmt(result['nll_sharpened_bound_se'])},"
                    f" {result['sharpened_bound_samples']} draws)"
                )
        else:
            mc = result["mc"]
            lines.append(
                f"  {split} accuracy: {fmt(result['accuracy_mean'])} (posterior mean), "
                f"{fmt(result['accuracy_mc'])} (MC, {result['mc_samples']} samples)"
            )
        lines.append(
            f"  calibration (MC): ECE {fmt(mc['ece'])}, MCE {fmt(mc['mce'])}, "
            f"Brier {fmt(mc['brier'])}, NLL {fmt(mc['nll'])}"
        )
        if "mutual_information" in mc:
            lines.append(
                f"  entropy (MC): predictive {fmt(mc['predictive_entropy'])}, mutual "
                f"information {fmt(mc['mutual_information'])} nats"
            )
        rev = result.get("reversed")
        if rev:
            lines.append(
                f"  reversed text: entropy gap {fmt(rev['entropy_gap_mean'])} (mean), "
                f"{fmt(rev['entropy_gap_mc'])} (MC) nats/word; "
                f"AUROC {fmt(rev['auroc_entropy'])}"
            )
    ood = metrics.get("ood_file")
    if ood:
        scores = ood["scores"]
        lines.append(
            f"  OOD {ood['name']} ({ood['sentences']['out']} sentences) vs {ood['split']} "
            f"({ood['sentences']['in']}): AUROC entropy "
            f"{fmt(scores['predictive_entropy']['auroc'])}, mutual information "
            f"{fmt(scores['mutual_information']['auroc'])}"
            + (
                f", observed sentence RMI {fmt(scores['observed_sentence_rmi']['auroc'])}"
                if "observed_sentence_rmi" in scores
                else ""
            )
            + f"; <unk> rate "
            f"{fmt(ood['unk_rate']['out'])} vs {fmt(ood['unk_rate']['in'])} (AUROC of that "
            f"rate alone {fmt(ood.get('unk_share_baseline', {}).get('auroc'))}; <unk> "
            f"positions: {ood.get('oov', 'include')})"
            + (
                f"; symbols the run never saw, removed: {fmt(ood['unseen_removed']['out'])} vs "
                f"{fmt(ood['unseen_removed']['in'])}"
                if "unseen_removed" in ood
                else ""
            )
        )
    mcmc = metrics.get("mcmc")
    if mcmc:
        lines.append(
            f"  NUTS: {mcmc['draws']} draws ({mcmc.get('num_chains', '?')} chains), predictive "
            f"r-hat max {fmt(mcmc['rhat_max_predictive'])}, ESS min "
            f"{fmt(mcmc['ess_min_predictive'])}, {mcmc['divergences']} divergence(s)"
            + _rhat_share_text(mcmc.get("rhat_share_predictive"))
        )
        if mcmc.get("warning"):
            lines.append(f"  warning: {mcmc['warning']}")
    if "files" in metrics:
        lines.append(f"  files: {', '.join(metrics['files'])}, metrics.json")
    return "\n".join(lines)


def _forecast_lines(split: str, result: dict[str, Any]) -> list[str]:
    base = result["baselines"]
    lines = [
        f"  {split} ({result['steps']} steps, MC {result['mc_samples']} samples): CRPS "
        f"{fmt(result['crps'])}, NLL {fmt(result['nll'])}, RMSE {fmt(result['rmse'])}",
        f"  interval coverage: 50% -> {fmt(result['coverage_50'])}, 90% -> "
        f"{fmt(result['coverage_90'])}",
        f"  baselines CRPS: persistence {fmt(base['persistence']['crps'])}, climatology "
        f"{fmt(base['climatology']['crps'])}",
    ]
    if isinstance(result.get("horizons"), dict):
        lines += _horizon_lines(result["horizons"])
    return lines


def _rank_phrase(horizons: dict[str, Any], which: str, crps_of) -> str:
    """'2 of 5 (CRPS 14.2; best arima 11.0)' for the network in one ranking."""
    order = horizons["ranking"][which]
    model = next(iter(horizons["methods"]))
    best = order[0]
    rest = "best" if best == model else f"best {best} {fmt(crps_of(best))}"
    return f"{order.index(model) + 1} of {len(order)} (CRPS {fmt(crps_of(model))}; {rest})"


def _horizon_lines(horizons: dict[str, Any]) -> list[str]:
    """The multi-step backtest: where it looked and where the network ranks by CRPS."""
    if "error" in horizons:
        return [f"  backtest: {horizons['error']}"]
    methods = horizons["methods"]

    def first(name: str) -> float:
        return methods[name]["crps"][0]

    def mean(name: str) -> float:
        return sum(methods[name]["crps"]) / len(methods[name]["crps"])

    lines = [
        f"  backtest: {horizons['horizon']}-step paths from {horizons['origins']} origins "
        f"(every {horizons['stride']} rows), season {horizons['season_source']}",
        f"  rank among {', '.join(methods)}: h=1 {_rank_phrase(horizons, 'h1', first)}; "
        f"mean over h=1..{horizons['horizon']} {_rank_phrase(horizons, 'mean', mean)}",
    ]
    for name, why in horizons.get("baseline_errors", {}).items():
        lines.append(f"  baseline {name}: {why}")
    return lines


def _rhat_share_text(shares: dict | None) -> str:
    """The summary's r-hat shares, e.g. "; r-hat ≤ 1.01 / 1.05 / 1.1 on 6% / 75% / 97% of
    predictions"; empty for runs written before the shares were recorded."""
    if not shares or any(v is None for v in shares.values()):
        return ""
    limits = " / ".join(shares)
    values = " / ".join(f"{v:.0%}" for v in shares.values())
    return f"; r-hat ≤ {limits} on {values} of predictions"
