-- racewire history store: races, drivers, laps, events, stints, standings.
-- No foreign keys between these tables: the dataflow writes them from several workers in any
-- order (a lap may be stored before its race's session), and every write is an idempotent upsert.

CREATE TABLE races (
    race_id         text PRIMARY KEY,
    name            text,
    circuit         text,
    total_laps      integer,
    track_length_m  integer,
    start_time      timestamptz,
    pit_loss_ms     integer,
    source          text,
    grid            jsonb,
    -- live status, from the latest leaderboard snapshot (version orders them)
    status          text NOT NULL DEFAULT 'scheduled',   -- scheduled | live | chequered | finished
    lap             integer NOT NULL DEFAULT 0,
    track_status    text,
    winner          integer,                              -- driver number, once the flag has fallen
    board_version   bigint NOT NULL DEFAULT -1,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX races_start_time_idx ON races (start_time DESC, race_id);

CREATE TABLE drivers (
    race_id       text NOT NULL,
    driver_number integer NOT NULL,
    code          text NOT NULL,
    name          text NOT NULL,
    team          text NOT NULL,
    team_colour   text NOT NULL,
    grid_position integer,
    PRIMARY KEY (race_id, driver_number)
);
CREATE INDEX drivers_number_idx ON drivers (driver_number, race_id);

CREATE TABLE laps (
    race_id       text NOT NULL,
    driver_number integer NOT NULL,
    lap           integer NOT NULL,
    event_id      text NOT NULL,
    lap_time_ms   integer,
    sector1_ms    integer,
    sector2_ms    integer,
    sector3_ms    integer,
    crossing_ms   bigint NOT NULL,
    -- order at the timing line among the cars that completed this lap, and the crossing-time
    -- gap to the first of them (recomputed whenever a lap of the same number is stored)
    position      integer,
    gap_ms        bigint,
    compound      text,
    tyre_age      integer,
    pit_in        boolean NOT NULL DEFAULT false,
    pit_out       boolean NOT NULL DEFAULT false,
    pit_lane_ms   integer,
    track_status  text NOT NULL,
    deleted       boolean NOT NULL DEFAULT false,
    personal_best boolean,
    stint         integer,
    PRIMARY KEY (race_id, driver_number, lap)
);
-- per-lap queries across drivers (lap charts, standings fallback, position/gap recomputation)
CREATE INDEX laps_race_lap_idx ON laps (race_id, lap, crossing_ms);
-- a driver's laps across races
CREATE INDEX laps_driver_idx ON laps (driver_number, race_id, lap);

CREATE TABLE events (
    race_id             text NOT NULL,
    event_id            text NOT NULL,
    type                text NOT NULL,
    lap                 integer NOT NULL,
    ts_ms               bigint NOT NULL,
    driver_number       integer,
    other_driver_number integer,
    payload             jsonb NOT NULL,
    PRIMARY KEY (race_id, event_id)
);
CREATE INDEX events_race_ts_idx ON events (race_id, ts_ms, event_id);
CREATE INDEX events_race_type_idx ON events (race_id, type, lap);
CREATE INDEX events_driver_idx ON events (race_id, driver_number, lap) WHERE driver_number IS NOT NULL;

CREATE TABLE stints (
    race_id       text NOT NULL,
    driver_number integer NOT NULL,
    stint         integer NOT NULL,
    compound      text,
    start_lap     integer NOT NULL,
    end_lap       integer NOT NULL,
    length        integer NOT NULL,
    open          boolean NOT NULL,
    payload       jsonb NOT NULL,
    PRIMARY KEY (race_id, driver_number, stint)
);

-- the timing tower at the end of each lap: from the latest timing-line snapshot in which every
-- running car had completed that lap (finished cars count as having completed every lap)
CREATE TABLE standings (
    race_id      text NOT NULL,
    lap          integer NOT NULL,
    version      bigint NOT NULL,
    ts_ms        bigint NOT NULL,
    track_status text NOT NULL,
    rows         jsonb NOT NULL,
    PRIMARY KEY (race_id, lap)
);
