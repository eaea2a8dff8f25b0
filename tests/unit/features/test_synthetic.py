from __future__ import annotations

import numpy as np

from teran_es.features.columnar import ColumnarReader
from teran_es.features.synthetic import COLOURS, OBJECTS, synthetic_records, synthetic_vocabulary


def test_same_seed_same_data_other_seed_other_data():
    a = list(synthetic_records({"train": 5, "test": 3}, feature_dim=16, seed=3))
    b = list(synthetic_records({"train": 5, "test": 3}, feature_dim=16, seed=3))
    c = list(synthetic_records({"train": 5, "test": 3}, feature_dim=16, seed=4))
    assert [r.captions for r in a] == [r.captions for r in b]
    assert all(np.array_equal(x.features, y.features) for x, y in zip(a, b, strict=True))
    assert [r.captions for r in a] != [r.captions for r in c]
    assert [r.split for r in a] == ["train"] * 5 + ["test"] * 3


def test_captions_name_the_concepts_with_known_words():
    vocabulary = set(synthetic_vocabulary())
    for record in synthetic_records({"train": 20}, seed=0):
        assert len(record.captions) == 5
        mentioned = [set(zip(c.split(), c.split()[1:], strict=False)) for c in record.captions]
        for caption, pairs in zip(record.captions, mentioned, strict=True):
            assert set(caption.split()) <= vocabulary
            named = {(w1, w2) for w1, w2 in pairs if w1 in COLOURS and w2 in OBJECTS}
            assert 2 <= len(named) <= 3
        # all five captions name the same concepts (the image's)
        assert len({frozenset((w1, w2) for w1, w2 in p if w1 in COLOURS) for p in mentioned}) == 1
        assert record.boxes.min() >= 0 and record.boxes.max() <= 1
        assert 3 <= record.n_regions <= 9


def test_dataset_on_disk_and_its_tokenizer(synthetic_dataset):
    from transformers import AutoTokenizer

    reader = ColumnarReader(synthetic_dataset.data_path)
    assert reader.splits() == {"train": 120, "val": 40, "test": 40}
    tokenizer = AutoTokenizer.from_pretrained(str(synthetic_dataset.text_backbone))
    record = next(reader.iter_records("test"))
    for caption in record.captions:
        ids = tokenizer(caption)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert len(ids) == len(caption.split()) + 2  # one piece per word, plus [CLS] and [SEP]
