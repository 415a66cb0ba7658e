-- The order at the timing line at the end of each lap, as the race state emits it (its lap chart:
-- the cars that completed the lap, by crossing time). laps.position and laps.gap_ms are taken from
-- it (position = place in the chart; gap = crossing time behind the chart's first car), instead of
-- being ranked again in SQL. A chart only grows (a car completing the lap late joins it), so the
-- longer one of the same lap is the newer.
CREATE TABLE lap_charts (
    race_id text NOT NULL,
    lap     integer NOT NULL,
    drivers integer[] NOT NULL,
    PRIMARY KEY (race_id, lap)
);
