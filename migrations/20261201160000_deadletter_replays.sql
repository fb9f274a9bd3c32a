-- Dead letters live in a JetStream stream, whose messages cannot be changed: a replay by
-- `omnistock deadletter replay` is recorded here, keyed by the letter's place in its stream,
-- so the letter itself is kept and its replay is known (and not repeated by accident).
CREATE TABLE dead_letter_replays (
    stream          text NOT NULL,
    stream_sequence bigint NOT NULL CHECK (stream_sequence > 0),
    reason          text NOT NULL,
    -- The movements subject the stored body was published to again.
    replayed_to     text NOT NULL,
    replayed_at     timestamptz NOT NULL DEFAULT now(),
    -- How many times: a forced replay (`--force`) counts up and moves `replayed_at`.
    replays         integer NOT NULL DEFAULT 1,
    PRIMARY KEY (stream, stream_sequence)
);
