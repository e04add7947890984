"""Drawing from a filtered population in O(log n), with the draws of the plain list comprehension.

The live changes pick "a random enterprise that has not filed yet" thousands of times a minute.
Filtering a million profiles for every pick costs ~0.1 s; ``PositionSubset`` keeps the members
(positions in the population's fixed order) in a Fenwick tree instead, so that

    population[subset.pick(rng)]  ==  rng.choice([x for x in population if member(x)])

for the same ``rng`` state — same draw, same random numbers consumed.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterable


class PositionSubset:
    """A subset of the positions ``0 … n-1`` that finds its ``k``-th smallest member in O(log n)."""

    def __init__(self, members: Iterable[bool]) -> None:
        flags = bytearray(1 if m else 0 for m in members)
        n = len(flags)
        tree = array("q", bytes(8 * (n + 1)))  # 1-based Fenwick tree of member counts
        for i, flag in enumerate(flags, start=1):
            if flag:
                tree[i] += 1
            parent = i + (i & -i)
            if parent <= n:
                tree[parent] += tree[i]
        self._flags, self._tree, self._n = flags, tree, n
        self._count = sum(flags)
        self._top = 1 << (n.bit_length() - 1) if n else 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, position: int) -> bool:
        return bool(self._flags[position])

    def set(self, position: int, member: bool) -> None:
        """Make ``position`` a member (or not)."""
        if bool(self._flags[position]) == member:
            return
        self._flags[position] = 1 if member else 0
        delta = 1 if member else -1
        self._count += delta
        i, tree, n = position + 1, self._tree, self._n
        while i <= n:
            tree[i] += delta
            i += i & -i

    def kth(self, k: int) -> int:
        """Position of the ``k``-th member (0-based, in position order)."""
        if not 0 <= k < self._count:
            raise IndexError(f"member {k} of {self._count}")
        pos, rest, step, tree, n = 0, k + 1, self._top, self._tree, self._n
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] < rest:
                pos, rest = nxt, rest - tree[nxt]
            step >>= 1
        return pos

    def pick(self, rng: random.Random) -> int:
        """A uniformly drawn member, exactly as ``rng.choice`` over the list of members draws it."""
        return self.kth(rng.choice(range(self._count)))
