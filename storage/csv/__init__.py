"""The table's CSV: parsing (`load`), formatting (`text`), writing files (`write`), and
streaming it from forked snapshots (`stream`)."""
