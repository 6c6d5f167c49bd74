"""Line up the prediction tables of several runs by clip_id (NaN rows where a run is missing)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from mer_utils.evaluation import labels_from_columns, probabilities_of


class AlignedProbabilities(NamedTuple):
    """Probabilities of several modalities on one shared list of clips."""

    clip_ids: np.ndarray  # (n,) clip ids (RAVDESS take ids), sorted
    true_labels: np.ndarray  # (n,) label strings
    probabilities: dict[str, np.ndarray]  # modality -> (n, K), NaN rows where it is missing
    labels: list[str]  # the label order of the probability columns


def align_modalities(tables: Mapping[str, pd.DataFrame]) -> AlignedProbabilities:
    """Align prediction tables of several modalities by clip_id.

    Clips absent from one table get a NaN row for that modality (the missing-modality case).
    Raises ValueError naming the modalities/clips when label orders differ, a table repeats a
    clip, the same clip has different true labels, or no clip is shared by all tables.
    """
    if not tables:
        raise ValueError("no prediction tables to align")
    names = list(tables)
    labels = None
    indexed: dict[str, pd.DataFrame] = {}
    for name in names:
        table = tables[name]
        for column in ("clip_id", "true_label"):
            if column not in table.columns:
                raise ValueError(f"prediction table of '{name}' has no '{column}' column")
        if table.empty:
            raise ValueError(f"prediction table of '{name}' is empty")
        table_labels = labels_from_columns(table)
        if labels is None:
            labels = table_labels
        elif table_labels != labels:
            raise ValueError(
                f"label orders differ: '{names[0]}' has {labels} but '{name}' has {table_labels}; "
                "fusion needs the same classes in the same order"
            )
        clip_ids = table["clip_id"].astype(str)
        repeated = sorted(set(clip_ids[clip_ids.duplicated()]))
        if repeated:
            raise ValueError(f"prediction table of '{name}' repeats clips {repeated[:5]}")
        frame = pd.DataFrame(probabilities_of(table, labels), index=clip_ids.to_numpy())
        frame["true_label"] = table["true_label"].fillna("").astype(str).to_numpy()
        indexed[name] = frame

    common = set.intersection(*(set(frame.index) for frame in indexed.values()))
    if not common:
        raise ValueError(
            f"the prediction tables of {names} share no clip_id; they must come from the same "
            "clips (RAVDESS take ids), e.g. the same data and split"
        )
    all_clips = sorted(set().union(*(set(frame.index) for frame in indexed.values())))
    true_labels = pd.Series("", index=all_clips, dtype=object)
    owner = pd.Series("", index=all_clips, dtype=object)
    probabilities = {}
    for name, frame in indexed.items():
        frame_labels = frame["true_label"]
        known = true_labels.loc[frame.index]
        conflict = (known != "") & (frame_labels != "") & (known != frame_labels)
        if conflict.any():
            clip = conflict[conflict].index[0]
            raise ValueError(
                f"{int(conflict.sum())} clips have different true labels in '{owner[clip]}' and "
                f"'{name}', e.g. clip {clip}: '{known[clip]}' vs '{frame_labels[clip]}'"
            )
        fill = (known == "") & (frame_labels != "")
        true_labels.loc[fill[fill].index] = frame_labels[fill]
        owner.loc[fill[fill].index] = name
        probabilities[name] = frame.drop(columns="true_label").reindex(all_clips).to_numpy(dtype=float)
    return AlignedProbabilities(
        np.asarray(all_clips, dtype=object), true_labels.to_numpy(dtype=object), probabilities, labels
    )


# A RAVDESS take id: vocal channel, emotion, intensity, statement, repetition, actor.
TAKE_ID = re.compile(r"^\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-(\d{2})$")


def clip_groups(clip_ids: Sequence[str]) -> np.ndarray | None:
    """The speaker (RAVDESS actor) of each clip, or None when any clip id is not a take id.

    Fusion parameters chosen by cross-validation on validation clips must be scored on speakers
    they were not fitted on, as the runs themselves are: these are the groups of that split.
    """
    actors = [TAKE_ID.match(str(clip)) for clip in clip_ids]
    if not actors or any(match is None for match in actors):
        return None
    return np.asarray([int(match.group(1)) for match in actors])


def label_indices(true_labels: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Integer class indices of label strings, with an error naming unknown labels."""
    position = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(y) for y in true_labels} - set(position))
    if "" in unknown:
        count = sum(str(y) == "" for y in true_labels)
        raise ValueError(
            f"{count} clips have no true label; fusion is fitted and scored on labelled clips only"
        )
    if unknown:
        raise ValueError(f"true labels {unknown} are not in the label order {list(labels)}")
    return np.asarray([position[str(y)] for y in true_labels], dtype=int)
