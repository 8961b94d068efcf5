"""Run configuration: presets from the papers, layering, TOML round trips and bad input."""

import math
import tomllib

import pytest

from bayesrnn.app.config import ConfigError, RunConfig
from bayesrnn.app.config_files import (
    comparable,
    config_to_dict,
    dumps_toml,
    parse_override,
    resolve_config,
    write_config,
)
from bayesrnn.app.presets import PRESETS, gal_prior_scale
from bayesrnn.inference import TrainerConfig

REQUIRED = (
    "zaremba-small",
    "zaremba-medium",
    "zaremba-large",
    "gal-medium",
    "gal-large",
    "fortunato-medium",
    "fortunato-medium-sharpened",
    "zoneout-large",
)


def test_defaults_are_the_offline_bayes_by_backprop_run():
    config = resolve_config()
    assert config == RunConfig()
    assert config.preset == "default"
    assert config.data.source == "embedded"
    assert config.guide.name == "mean_field"
    assert config.model.prior == "scale_mixture"
    assert config.model.deterministic == ("decoder.bias",)
    assert (config.model.prior_pi, config.model.prior_sigma1) == (0.25, math.exp(-1))


@pytest.mark.parametrize("name", REQUIRED)
def test_required_presets_exist_with_source_and_published_numbers(name):
    preset = PRESETS[name]
    assert preset.source and preset.published
    assert any(ch.isdigit() for ch in preset.published)
    config = resolve_config(name)
    assert config.preset == name
    assert config.data.source == "ptb"
    assert config.task == "lm"


def test_zaremba_presets_match_the_paper_schedules():
    small, medium, large = (resolve_config(f"zaremba-{s}") for s in ("small", "medium", "large"))
    assert (small.model.hidden_size, small.model.init_range, small.model.naive_dropout) == (
        200,
        0.1,
        0.0,
    )
    assert (small.trainer.bptt, small.trainer.epochs, small.trainer.lr_decay) == (20, 13, 2.0)
    # "4 epochs at lr 1 then halve each epoch": epoch index 4 is the first halved one.
    assert [small.trainer.learning_rate(e) for e in (3, 4, 5)] == [1.0, 0.5, 0.25]
    assert (medium.model.hidden_size, medium.model.naive_dropout, medium.trainer.epochs) == (
        650,
        0.5,
        39,
    )
    assert medium.trainer.learning_rate(5) == 1.0
    assert medium.trainer.learning_rate(6) == pytest.approx(1 / 1.2)
    assert (large.model.hidden_size, large.model.naive_dropout, large.trainer.clip_norm) == (
        1500,
        0.65,
        10.0,
    )
    for config in (small, medium, large):
        assert config.model.prior == "none" and config.guide.name == "none"
        assert config.model.num_layers == 2 and config.trainer.batch_size == 20


def test_bayesian_presets():
    bbb = resolve_config("fortunato-medium")
    assert bbb.guide.name == "mean_field" and bbb.model.prior == "scale_mixture"
    assert bbb.model.deterministic == ("decoder.bias",)
    assert (bbb.model.prior_pi, bbb.model.prior_sigma2) == (0.25, math.exp(-7))
    # lr 1 for 20 epochs, then x0.9 per epoch
    assert bbb.trainer.learning_rate(19) == 1.0
    assert bbb.trainer.learning_rate(21) == pytest.approx(0.81)
    # the prior and KL brnn_ptb.py runs: the mixture per row, the KL by one sample
    assert (bbb.model.prior_per, bbb.guide.kl) == ("row", "sample")
    assert "brnn_ptb.py" in PRESETS["fortunato-medium"].notes
    assert "eq. 18" in PRESETS["fortunato-medium"].notes  # names the paper-vs-code difference
    sharp = resolve_config("fortunato-medium-sharpened")
    assert sharp.guide.name == "sharpened" and sharp.guide.sigma0 == 0.02
    # the paper's initial σ stays on its presets; the others take the library's default
    assert bbb.guide.init_scale == sharp.guide.init_scale == "fortunato"
    for name in PRESETS:
        if not name.startswith("fortunato"):
            assert resolve_config(name).guide.init_scale == "auto", name
    assert comparable(sharp)["model"] == comparable(bbb)["model"]
    gal = resolve_config("gal-large")
    assert gal.guide.name == "gal" and gal.model.prior == "gaussian"
    assert (gal.guide.dropout_embedding, gal.guide.dropout_hidden) == (0.3, 0.3)
    assert (gal.guide.dropout_input, gal.guide.dropout_output) == (0.5, 0.5)
    assert (gal.trainer.epochs, gal.trainer.constant_epochs, gal.trainer.lr_decay) == (55, 10, 1.15)
    assert "UNVERIFIED" in PRESETS["gal-medium"].notes
    zoneout = resolve_config("zoneout-large")
    assert (zoneout.model.zoneout_c, zoneout.model.zoneout_h) == (0.25, 0.025)
    assert zoneout.model.naive_dropout == 0.65
    polarity = resolve_config("gal-polarity")
    assert polarity.task == "classify" and polarity.data.source == "polarity"
    assert polarity.trainer.clip_norm is None


def test_gal_prior_scale_matches_weight_decay_by_hand():
    # s² = 1 / (λ (1 − p) C B): λ = 1e-7, p = 0.5, C·B = 929,589 / 35 windows x batch.
    expected = 1 / math.sqrt(1e-7 * 0.5 * 929_589 / 35)
    assert gal_prior_scale(1e-7, 0.5, 929_589 / 35) == pytest.approx(expected)
    assert expected == pytest.approx(27.44, abs=0.01)
    assert resolve_config("gal-large").model.prior_scale == pytest.approx(27.4)


def test_layers_preset_then_file_then_set_then_flags(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text(
        'preset = "zaremba-medium"\n[model]\nhidden_size = 300\nnaive_dropout = 0.3\n'
        "[trainer]\nlr = 0.5\nepochs = 2\n"
    )
    config = resolve_config(
        None,
        path,
        ["model.naive_dropout=0.2", "trainer.epochs=3"],
        {"trainer": {"epochs": 4}},
    )
    assert config.preset == "zaremba-medium"
    assert config.model.embedding_size == 650  # from the preset
    assert config.model.hidden_size == 300  # from the file
    assert config.trainer.lr == 0.5  # from the file
    assert config.model.naive_dropout == 0.2  # --set beats the file
    assert config.trainer.epochs == 4  # flags beat --set
    # --preset beats the file's preset key
    assert resolve_config("zaremba-small", path).preset == "zaremba-small"


def test_parse_override_types():
    assert parse_override("trainer.lr=0.5") == {"trainer": {"lr": 0.5}}
    assert parse_override("guide.name=gal") == {"guide": {"name": "gal"}}
    assert parse_override("model.deterministic=[]") == {"model": {"deterministic": []}}
    assert parse_override("trainer.progress=false") == {"trainer": {"progress": False}}
    config = resolve_config(
        overrides=[
            "trainer.clip_norm=none",
            "evaluation.pruning_fractions=0,0.5,0.9",
            "model.init_range=0.1",
            "guide.init_scale=0.05",
            "model.deterministic=[]",
        ]
    )
    assert config.trainer.clip_norm is None
    assert config.evaluation.pruning_fractions == (0.0, 0.5, 0.9)
    assert config.model.init_range == 0.1
    assert config.guide.init_scale == 0.05
    assert config.model.deterministic == ()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.hiden_size=3"], "unknown config key 'model.hiden_size'"),
        (["modle.hidden_size=3"], "unknown config key 'modle'"),
        (["model.hidden_size=big"], "model.hidden_size must be an integer"),
        (["trainer.lr=-1"], "lr must be positive"),
        (["trainer.optimizer=rmsprop"], "optimizer must be one of"),
        (["guide.name=laplace"], "guide.name must be one of"),
        (["task=classify"], "expects section.key=value"),
        (["evaluation.pruning_fractions=0,2"], "pruning_fractions"),
        (["model.prior_per=gate"], "model.prior_per must be one of weight, row"),
        (["guide.kl=analytic"], "guide.kl must be one of expected, sample"),
        (["guide.quadrature_order=0"], "guide.quadrature_order must be an integer >= 1"),
        (["guide.eta_max=-0.1"], "guide.eta_max must be none or a positive number"),
        (["evaluation.dynamic_lr=-1"], "evaluation.dynamic_lr must be none or a number >= 0"),
        (["evaluation.ood_oov=drop"], "evaluation.ood_oov must be one of exclude, include"),
        (["evaluation.mc_decoder=logits"], "evaluation.mc_decoder must be one of weights, local"),
        (["evaluation.mc_recurrent_draws=2"], "mc_recurrent_draws needs evaluation.mc_decoder"),
        (
            ["evaluation.mc_decoder=local", "evaluation.mc_recurrent_draws=0"],
            "evaluation.mc_recurrent_draws must be a positive integer",
        ),
        (
            ["evaluation.mc_decoder=local", "evaluation.mc_recurrent_draws=11"],
            r"mc_recurrent_draws \(11\) must not exceed evaluation.mc_samples \(10\)",
        ),
        (
            ["evaluation.mc_decoder=local", "guide.name=gal"],
            "mc_decoder=local needs guide.name=mean_field",
        ),
        (
            ["evaluation.mc_decoder=local", "model.tie_weights=true"],
            "mc_decoder=local needs model.tie_weights=false",
        ),
    ],
)
def test_bad_overrides_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(overrides=overrides)


def test_unknown_preset_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'zaremba-huge'.*zaremba-small"):
        resolve_config("zaremba-huge")
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text("[trainer]\nlearning_rate = 1.0\n")
    with pytest.raises(ConfigError, match=r"bad.toml: unknown config key 'trainer.learning_rate'"):
        resolve_config(config_file=bad_key)
    not_toml = tmp_path / "broken.toml"
    not_toml.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config(config_file=not_toml)
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config(config_file=tmp_path / "missing.toml")


@pytest.mark.parametrize("name", list(PRESETS))
def test_resolved_toml_reads_back_to_the_same_config(tmp_path, name):
    config = resolve_config(name, overrides=["trainer.clip_norm=none", "data.max_vocab=500"])
    path = write_config(config, tmp_path / "config.toml", header="test\nheader")
    text = path.read_text()
    assert text.startswith("# test\n# header\n")
    tomllib.loads(text)  # valid TOML
    assert resolve_config(config_file=path) == config
    assert config_to_dict(config)["trainer"]["clip_norm"] is None


def test_comparable_ignores_runtime_keys_only():
    base = resolve_config()
    moved = resolve_config(
        flags={"trainer": {"device": "cuda", "progress": False}, "data": {"dir": "/elsewhere"}}
    )
    assert comparable(base) == comparable(moved)
    assert comparable(base) != comparable(resolve_config(flags={"trainer": {"seed": 1}}))


def test_trainer_section_is_the_trainer_config():
    config = resolve_config(overrides=["trainer.max_windows=7"])
    assert isinstance(config.trainer, TrainerConfig)
    assert config.trainer.max_windows == 7
    assert "max_windows = 7" in dumps_toml(config)


def test_data_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = resolve_config(flags={"data": {"source": "corpus.txt", "dir": "d"}})
    assert config.data.source == str(tmp_path / "corpus.txt")
    assert config.data.dir == str(tmp_path / "d")
    assert config.data.is_path
    assert not resolve_config().data.is_path


def test_both_mixture_priors_and_the_kl_estimator_are_selectable(tmp_path):
    from bayesrnn.app.setup import build_prior
    from bayesrnn.models import ScaleMixturePrior

    row = resolve_config(overrides=["model.prior_per=row", "guide.kl=sample"])
    prior = build_prior(row)
    assert {p.per for p in prior.values()} == {"row", "column", "whole"}
    assert row.guide.options()["kl"] == "sample"
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nprior_per = "weight"\n[guide]\nquadrature_order = 12\n')
    weight = resolve_config(config_file=toml)
    assert build_prior(weight) == ScaleMixturePrior()
    assert weight.guide.options()["quadrature_order"] == 12


def test_a_bare_list_override_takes_brackets_or_not():
    for text in ("data.covariates=[price,promo]", "data.covariates=price,promo"):
        assert resolve_config(None, None, [text]).data.covariates == ("price", "promo")


def test_the_local_mc_estimator_is_selectable_and_reads_back(tmp_path):
    config = resolve_config(
        overrides=["evaluation.mc_decoder=local", "evaluation.mc_recurrent_draws=2"]
    )
    assert (config.evaluation.mc_decoder, config.evaluation.mc_recurrent_draws) == ("local", 2)
    path = tmp_path / "config.toml"
    write_config(config, path)
    assert resolve_config(config_file=path) == config
