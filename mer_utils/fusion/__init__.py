"""Late fusion of per-clip probabilities: calibrated entropy x trust weighting and its baselines.

Fusion works on prediction tables only (``predictions_val.csv`` / ``predictions_test.csv`` of run
folders, rows keyed by the RAVDESS take id) and never imports a model.

The method: every run's probabilities are first temperature-scaled on validation so that their
entropies are comparable. Per clip, a run's *confidence* is ``1 - H(p) / log(K)``; its *trust* is
its validation macro-F1 or accuracy (or, per class, its precision or recall for the class it
predicts). The weight of a run on a clip is ``trust^gamma x confidence^alpha``, normalised over
the runs present on that clip; the fused distribution is the weighted sum of the calibrated
probabilities and the label its argmax. A run that is missing on a clip (no face, no audio
track) has a NaN row and simply drops out of that clip's sum. The exponents and the kind of
trust are chosen by cross-validation on the validation clips, and a guard falls back to the
best single run when no fusion beats it there.

Three validation actors are too few to choose on (``smallest_detectable_gain``: the guard's exact
test misses gains of a few points on 180 clips). When every run folder also holds
``predictions_oof.csv`` (each training and validation clip predicted by a refit of the run's
recipe that never heard its actor, :mod:`mer_utils.pipelines.out_of_fold`), `mer fuse` fits all of
the above on those instead (``fitting_tables``: fifteen actors, 900 clips on the default split,
cross-validated with whole actors held out); fusion.json says which under ``"fitted_on"``.

Modules, one job each: ``alignment`` (line tables up by clip), ``calibration`` (entropy,
temperature, ECE), ``statistics`` (scores, bootstrap, McNemar), ``methods`` (the fusion rules,
one clip), ``selection`` (the cross-validated, tie-aware choice), ``fitting`` (fit everything on
validation, apply a method by name), ``comparison`` (the results table), ``robustness``
(missing/degraded curves), ``plots``, ``parameters`` (fusion.json) and ``io`` (run folders in,
results out: `mer fuse`). The names below are the package's public interface.
"""

from mer_utils.fusion.alignment import AlignedProbabilities, align_modalities, label_indices
from mer_utils.fusion.calibration import (
    ECE_BINS,
    EPSILON,
    TEMPERATURE_BOUNDS,
    apply_temperature,
    calibrate,
    entropy,
    entropy_confidence,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from mer_utils.fusion.comparison import (
    TABLE_COLUMNS,
    FusionComparison,
    calibration_table,
    compare_fitted,
    compare_fusion_methods,
    run_comparison,
    score_methods,
    weight_examples,
    weights_by_emotion,
)
from mer_utils.fusion.fitting import (
    FIT_SOURCES,
    FUSION_METHODS,
    GUARDED_METHOD,
    MAIN_METHOD,
    METHOD_DESCRIPTIONS,
    OUT_OF_FOLD_FIT,
    SINGLE_PREFIX,
    VALIDATION_FIT,
    FittedFusion,
    fit_fusion,
    fit_fusion_independent,
    fuse_with_method,
    method_names,
)
from mer_utils.fusion.io import (
    DATA_FOLDER,
    FIT_ON_CHOICES,
    drop_duplicate_runs,
    fitting_tables,
    fuse_runs,
    fusion_parameters_for_runs,
    markdown_table,
    modality_names,
    read_run_tables,
    write_fusion_outputs,
)
from mer_utils.fusion.methods import (
    TRUST_KINDS,
    StackingModel,
    class_trust_from_validation,
    confidence_fusion,
    entropy_trust_fusion,
    family_weights,
    fit_stacking,
    fuse_single,
    inverse_entropy_fusion,
    majority_vote_fusion,
    mean_fusion,
    product_fusion,
    trust_from_validation,
    trust_fusion,
    weighted_fusion,
)
from mer_utils.fusion.parameters import (
    FUSION_FILE,
    fit_fusion_parameters,
    fusion_parameters,
    load_fusion_parameters,
    single_clip_rule,
    trust_and_temperatures,
    validate_fusion_parameters,
)
from mer_utils.fusion.plots import plot_reliability_diagrams, plot_robustness_curves, plot_weights_by_emotion
from mer_utils.fusion.robustness import (
    MISSING_SHARES,
    degraded_modality_curve,
    missing_modality_curve,
    simulate_missing,
)
from mer_utils.fusion.selection import (
    FAMILY_METHODS,
    FamilyParameters,
    cross_validated_correctness,
    family_grid,
    guard_power,
    guard_test,
    select_method,
    simplest_within_tie,
    smallest_detectable_gain,
)
from mer_utils.fusion.statistics import (
    BOOTSTRAP_SAMPLES,
    CONFIDENCE_LEVEL,
    MCNEMAR_EXACT_LIMIT,
    TRUST_METRICS,
    bootstrap_ci,
    macro_f1,
    mcnemar_test,
    method_metrics,
    predicted_indices,
)

__all__ = [
    "smallest_detectable_gain",
    "guard_test",
    "guard_power",
    "fitting_tables",
    "FIT_ON_CHOICES",
    "VALIDATION_FIT",
    "OUT_OF_FOLD_FIT",
    "FIT_SOURCES",
    "AlignedProbabilities",
    "BOOTSTRAP_SAMPLES",
    "CONFIDENCE_LEVEL",
    "DATA_FOLDER",
    "ECE_BINS",
    "EPSILON",
    "FAMILY_METHODS",
    "FUSION_FILE",
    "FUSION_METHODS",
    "FamilyParameters",
    "FittedFusion",
    "FusionComparison",
    "GUARDED_METHOD",
    "MAIN_METHOD",
    "MCNEMAR_EXACT_LIMIT",
    "METHOD_DESCRIPTIONS",
    "MISSING_SHARES",
    "SINGLE_PREFIX",
    "StackingModel",
    "TABLE_COLUMNS",
    "TEMPERATURE_BOUNDS",
    "TRUST_KINDS",
    "TRUST_METRICS",
    "align_modalities",
    "apply_temperature",
    "bootstrap_ci",
    "calibrate",
    "calibration_table",
    "class_trust_from_validation",
    "compare_fitted",
    "compare_fusion_methods",
    "confidence_fusion",
    "cross_validated_correctness",
    "degraded_modality_curve",
    "drop_duplicate_runs",
    "entropy",
    "entropy_confidence",
    "entropy_trust_fusion",
    "expected_calibration_error",
    "family_grid",
    "family_weights",
    "fit_fusion",
    "fit_fusion_independent",
    "fit_fusion_parameters",
    "fit_stacking",
    "fit_temperature",
    "fuse_runs",
    "fuse_single",
    "fuse_with_method",
    "fusion_parameters",
    "fusion_parameters_for_runs",
    "inverse_entropy_fusion",
    "label_indices",
    "load_fusion_parameters",
    "macro_f1",
    "majority_vote_fusion",
    "markdown_table",
    "mcnemar_test",
    "mean_fusion",
    "method_metrics",
    "method_names",
    "missing_modality_curve",
    "modality_names",
    "plot_reliability_diagrams",
    "plot_robustness_curves",
    "plot_weights_by_emotion",
    "predicted_indices",
    "product_fusion",
    "read_run_tables",
    "reliability_curve",
    "run_comparison",
    "score_methods",
    "select_method",
    "simplest_within_tie",
    "simulate_missing",
    "single_clip_rule",
    "trust_and_temperatures",
    "trust_from_validation",
    "trust_fusion",
    "validate_fusion_parameters",
    "weight_examples",
    "weighted_fusion",
    "weights_by_emotion",
    "write_fusion_outputs",
]
