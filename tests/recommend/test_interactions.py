"""Readers, id mapping, duplicates, thresholds, bad input, and splits that never leak the future."""

from __future__ import annotations

import numpy as np
import pytest

from deepstrata.data.interactions import (leave_last_out, merge_logs, read_interactions, read_raw_log,
                                          temporal_split)
from deepstrata.errors import ConfigError, DataError

from .conftest import write

LOG = """user_id,item_id,rating,timestamp
u1,a,5,10
u1,b,3,20
u1,c,4,30
u1,d,5,40
u2,b,4,15
u2,c,1,25
u2,a,5,35
u3,a,2,50
"""


def test_csv_with_header_string_ids(tmp_path):
    log = read_interactions(write(tmp_path / "log.csv", LOG))
    assert log.user_ids == ("u1", "u2", "u3") and log.item_ids == ("a", "b", "c", "d")
    assert len(log) == 8 and log.has_time
    assert log.format == "csv"


def test_numeric_ids_are_ordered_as_numbers(tmp_path):
    path = write(tmp_path / "log.tsv", "user\titem\n10\t2\n9\t10\n10\t1\n")
    log = read_interactions(path)
    assert log.user_ids == ("9", "10") and log.item_ids == ("1", "2", "10")
    assert "no time column" in " ".join(log.notes)
    assert list(log.times) == [0.0, 1.0, 2.0]


def test_explicit_columns_and_threshold(tmp_path):
    text = "who,what,stars,when\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in
                                              [(1, 1, 5, 1), (1, 2, 2, 2), (2, 1, 4, 3), (2, 3, 3.5, 4)])
    path = write(tmp_path / "x.csv", text)
    log = read_interactions(path, user_column="who", item_column="what", rating_column="stars", time_column="when",
                            min_rating=4)
    assert len(log) == 2 and log.item_ids == ("1",)
    assert any("2 rows with stars < 4" in note for note in log.notes)


def test_iso_dates_as_time(tmp_path):
    path = write(tmp_path / "x.csv", "user,item,date\na,x,2024-01-02\na,y,2024-01-01T12:00:00\n")
    log = read_interactions(path)
    order = np.argsort(log.times)
    assert [log.item_ids[i] for i in log.items[order]] == ["y", "x"]


def test_duplicates_merge_into_latest_and_are_counted(tmp_path):
    path = write(tmp_path / "d.csv", "user,item,ts\n1,a,1\n1,a,5\n1,b,3\n")
    log = read_interactions(path)
    assert len(log) == 2
    a = log.item_ids.index("a")
    assert log.times[log.items == a][0] == 5
    assert any("1 repeated" in note for note in log.notes)


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"userId": [1, 1, 2], "movieId": [10, 20, 10], "timestamp": [1, 2, 3]}), path)
    log = read_interactions(path)
    assert log.format == "parquet" and log.user_ids == ("1", "2") and log.item_ids == ("10", "20")


def test_movielens_formats_by_name_and_shape(tmp_path, ml_slice):
    log = read_interactions(ml_slice)
    assert log.format == "movielens-100k" and log.num_users == 100
    assert log.titles["50"] == "Star Wars (1977)"
    write(tmp_path / "ml1m" / "ratings.dat",
          "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978300000\n")
    write(tmp_path / "ml1m" / "movies.dat",
          "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James (1996)::Kids\n")
    log = read_interactions(tmp_path / "ml1m")
    assert log.format == "movielens-dat" and len(log) == 3
    assert log.titles["1193"].startswith("One Flew")
    csv_path = write(tmp_path / "mlcsv" / "ratings.csv",
                     "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n")
    write(tmp_path / "mlcsv" / "movies.csv",
          'movieId,title,genres\n1,Toy Story (1995),Animation\n3,"Grumpier Old Men (1995)",Comedy\n')
    log = read_interactions(csv_path)
    assert log.titles == {"1": "Toy Story (1995)", "3": "Grumpier Old Men (1995)"}
    headerless = write(tmp_path / "events.txt", "7\t1\t4\t100\n7\t2\t3\t200\n")
    log = read_interactions(headerless)
    assert log.format == "headerless-tsv" and log.user_ids == ("7",) and log.has_time


def test_missing_column_lists_existing(tmp_path):
    path = write(tmp_path / "x.csv", "person,thing\n1,2\n")
    with pytest.raises(DataError, match=r"no user column found \(columns: person, thing\)"):
        read_interactions(path)
    with pytest.raises(DataError, match=r"no item column 'product' \(columns: person, thing\)"):
        read_interactions(path, user_column="person", item_column="product")


def test_empty_logs(tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_interactions(write(tmp_path / "empty.csv", ""))
    with pytest.raises(DataError, match="no interactions"):
        read_interactions(write(tmp_path / "header.csv", "user_id,item_id\n"))
    with pytest.raises(DataError, match="no interactions left"):
        read_interactions(write(tmp_path / "low.csv", "user,item,rating\n1,1,1\n"), min_rating=4)


def test_non_numeric_rating_names_the_line(tmp_path):
    path = write(tmp_path / "r.csv", "user,item,rating\n1,1,4\n1,2,great\n")
    with pytest.raises(DataError, match=r"r\.csv:line 3: rating 'great' in column 'rating' is not a number"):
        read_interactions(path, min_rating=3)
    with pytest.raises(DataError, match="no rating column"):
        read_interactions(write(tmp_path / "n.csv", "user,item\n1,1\n"), min_rating=3)


def test_bad_time_and_short_row(tmp_path):
    with pytest.raises(DataError, match="line 2: time 'yesterday'"):
        read_interactions(write(tmp_path / "t.csv", "user,item,timestamp\n1,1,yesterday\n"))
    with pytest.raises(DataError, match="line 3: 1 fields"):
        read_interactions(write(tmp_path / "s.csv", "user,item\n1,1\n2\n"))


def test_leave_last_out_never_sees_the_future(tmp_path):
    log = read_interactions(write(tmp_path / "log.csv", LOG))
    split = leave_last_out(log)
    assert split.counts["users_single_interaction"] == 1  # u3: kept for training, not evaluated
    assert split.counts["users_not_in_test"] == 1
    assert len(split.train_users) == 8 - 2 - 2
    u3 = log.user_ids.index("u3")
    assert u3 in split.train_users and u3 not in split.test.users
    for eval_set in (split.val, split.test):
        for row, user in enumerate(eval_set.users):
            history = eval_set.histories([row])[0]
            (target,) = eval_set.target_lists([row])[0]
            mask = log.users == user
            t_of = dict(zip(log.items[mask].tolist(), log.times[mask].tolist()))
            assert all(t_of[h] < t_of[target] for h in history)
            train_items = split.train_items[split.train_users == user]
            assert all(t_of[i] < t_of[target] for i in train_items)
    u1 = log.user_ids.index("u1")
    row = list(split.test.users).index(u1)
    assert [log.item_ids[i] for i in split.test.histories([row])[0]] == ["a", "b", "c"]
    assert [log.item_ids[i] for i in split.test.target_lists([row])[0]] == ["d"]


def test_temporal_split_cuts_globally(ml_slice):
    log = read_interactions(ml_slice)
    split = temporal_split(log, 0.1, 0.1)
    start_val, start_test = split.counts["val_starts"], split.counts["test_starts"]
    assert split.train_times.max() < start_val < start_test
    for eval_set, start, end in ((split.val, start_val, start_test), (split.test, start_test, np.inf)):
        assert len(eval_set) > 0
        for row, user in enumerate(eval_set.users[:50]):
            mask = log.users == user
            t_of = dict(zip(log.items[mask].tolist(), log.times[mask].tolist()))
            assert all(t_of[h] < start for h in eval_set.histories([row])[0])
            assert all(start <= t_of[t] < end for t in eval_set.target_lists([row])[0])


def test_temporal_split_needs_time(tmp_path):
    log = read_interactions(write(tmp_path / "x.csv", "user,item\n1,1\n1,2\n2,1\n"))
    with pytest.raises(ConfigError, match="needs a time column"):
        temporal_split(log)


def test_merge_keeps_old_indices(tmp_path):
    old = read_interactions(write(tmp_path / "old.csv", LOG))
    raw = read_raw_log(write(tmp_path / "new.csv",
                             "user_id,item_id,rating,timestamp\nu9,z,5,60\nu1,a,4,70\nu2,e,3,80\n"))
    merged, stats = merge_logs(old, raw)
    assert merged.user_ids[:3] == old.user_ids and merged.item_ids[:4] == old.item_ids
    assert stats == {"new_events": 3, "new_users": 1, "new_items": 2, "merged_duplicates": 1}
    assert len(merged) == len(old) + 2
