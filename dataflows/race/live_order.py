"""Live running order from telemetry progress, with hysteresis.

Race progress of a car = laps completed + fraction of the current lap. A telemetry sample moves a
car past its neighbour only when it leads it by more than ``hysteresis`` (a fraction of a lap),
so two cars side by side, whose reported positions jitter around each other, do not generate a
burst of swaps. A lap completion is exact and re-syncs the car without hysteresis.

>>> o = LiveOrder([1, 2], hysteresis=0.002)
>>> _ = o.update(1, 0.5), o.update(2, 0.5005)   # 2 leads by less than the hysteresis
>>> o.order
[1, 2]
>>> _ = o.update(2, 0.503)
>>> o.order
[2, 1]
"""

from __future__ import annotations


class LiveOrder:
    def __init__(self, cars: list[int], hysteresis: float) -> None:
        self.order: list[int] = list(cars)
        self.progress: dict[int, float] = dict.fromkeys(cars, 0.0)
        self.out: set[int] = set()  # retired cars: always behind running ones
        self.frozen: set[int] = set()  # finished cars: progress fixed at the flag
        self.hysteresis = hysteresis
        self.swaps = 0

    def _index(self, car: int) -> int:
        return self.order.index(car)

    def _bubble(self, car: int, margin: float) -> bool:
        """Move ``car`` forward/backward while it is clear of a neighbour by ``margin``."""
        order, prog = self.order, self.progress
        i = order.index(car)
        p = prog[car]
        moved = False
        while i > 0:
            ahead = order[i - 1]
            if ahead in self.out or p > prog[ahead] + margin:
                if ahead in self.out and car in self.out:
                    break
                order[i - 1], order[i] = car, ahead
                i -= 1
                moved = True
                self.swaps += 1
            else:
                break
        if moved:
            return True
        while i < len(order) - 1:
            behind = order[i + 1]
            if behind in self.out:
                break
            if car in self.out or prog[behind] > p + margin:
                order[i + 1], order[i] = car, behind
                i += 1
                moved = True
                self.swaps += 1
            else:
                break
        return moved

    def update(self, car: int, progress: float) -> bool:
        """A telemetry sample; returns True when the order changed."""
        if car in self.frozen or car not in self.progress:
            return False
        prog = self.progress
        prog[car] = progress
        out = self.out
        if car in out:
            return False  # a retired car's last position is kept, but it no longer moves in the order
        # the common case, inline (once per telemetry sample): clear of neither neighbour
        order, margin = self.order, self.hysteresis
        i = order.index(car)
        if i > 0:
            ahead = order[i - 1]
            if ahead in out or progress > prog[ahead] + margin:
                return self._bubble(car, margin)
        if i < len(order) - 1:
            behind = order[i + 1]
            if behind not in out and prog[behind] > progress + margin:
                return self._bubble(car, margin)
        return False

    def sync(self, car: int, progress: float) -> bool:
        """A lap completion (exact): no hysteresis."""
        if car not in self.progress:
            self.order.append(car)
        if progress > self.progress.get(car, 0.0) or car not in self.progress:
            self.progress[car] = progress
        return self._bubble(car, 0.0)

    def freeze(self, car: int, progress: float) -> None:
        self.progress[car] = progress
        self._bubble(car, 0.0)
        self.frozen.add(car)

    def retire(self, car: int) -> bool:
        """Move a retired car behind every running car (retired cars keep their relative order)."""
        if car in self.out:
            return False
        before = list(self.order)
        self.order.remove(car)
        # behind all running cars, ahead of cars that retired with fewer laps
        i = len(self.order)
        while i > 0 and self.order[i - 1] in self.out and self.progress[self.order[i - 1]] < self.progress[car]:
            i -= 1
        self.order.insert(i, car)
        self.out.add(car)
        return self.order != before

    def reset(self, order: list[int]) -> bool:
        """Replace the order (e.g. with the classification at the flag)."""
        changed = order != self.order
        self.order = list(order)
        return changed
