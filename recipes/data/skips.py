"""Counting skipped records: what both kinds of corpus report instead of dropping silently."""


class SkipCounter:
    """Adds `skip` and `skipped_summary` to a dataclass with `skipped` and `skipped_examples`.

    `skipped` maps a reason to a count, `skipped_examples` a reason to the first
    `locations_per_reason` locations (`"train.de:17"`, an image path, ...).
    """

    locations_per_reason = 3

    def skip(self, reason, location):
        """Counts one skipped record; keeps its location if it is among the first few."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        locations = self.skipped_examples.setdefault(reason, [])
        if len(locations) < self.locations_per_reason:
            locations.append(location)

    def skipped_summary(self):
        """One line, e.g. "skipped 3 records: 2 empty line (train.de:17, train.de:20), 1 ..."."""
        total = sum(self.skipped.values())
        parts = []
        for reason, count in sorted(self.skipped.items()):
            locations = list(self.skipped_examples.get(reason, []))
            if count > len(locations):
                locations.append("...")
            parts.append(f"{count} {reason} ({', '.join(locations)})")
        return f"skipped {total} record{'' if total == 1 else 's'}" + (
            ": " + ", ".join(parts) if parts else ""
        )
