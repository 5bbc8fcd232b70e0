-- Records are stored a run of a session's consecutive seqs per row instead of a record per
-- row: at 100,000 records/s the heap tuple, btree entry and ~450 bytes of WAL of every
-- record cost PostgreSQL about a core (BENCHMARKS.md, "PostgreSQL, round 5"). A row holds
-- every seq of first_seq..=last_seq and no two rows of a session share a seq
-- (controlplane/src/store/pg_records.rs keeps both, under the session row's lock).
--
-- `records` holds, per record in seq order: ts_ms (int8), the kind's byte length (int4) and
-- UTF-8 bytes, the body's byte length (int4) and bytes, integers big-endian as int8send and
-- int4send write them.
CREATE TABLE record_batches (
    session_id  TEXT    NOT NULL,
    first_seq   BIGINT  NOT NULL,
    last_seq    BIGINT  NOT NULL,
    records     BYTEA   NOT NULL,
    PRIMARY KEY (session_id, first_seq),
    CHECK (first_seq >= 1 AND last_seq >= first_seq)
);

-- Existing records move over as runs of consecutive seqs (seq - row number is constant along
-- a run), at most 100 records a row (the writer's bound is 1,000).
INSERT INTO record_batches (session_id, first_seq, last_seq, records)
SELECT session_id, MIN(seq), MAX(seq),
       string_agg(int8send(ts_ms)
                  || int4send(octet_length(convert_to(kind, 'UTF8')))
                  || convert_to(kind, 'UTF8')
                  || int4send(octet_length(body))
                  || body,
                  ''::bytea ORDER BY seq)
FROM (SELECT r.*, seq - row_number() OVER (PARTITION BY session_id ORDER BY seq) AS run
      FROM records r) numbered
GROUP BY session_id, run, (seq - 1) / 100;

DROP TABLE records;

CREATE OR REPLACE FUNCTION kortix_delete_session_records() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM record_batches WHERE session_id = OLD.id;
    RETURN OLD;
END
$$;
