package main

import (
	"runtime/debug"
	"runtime/metrics"
)

// The garbage collector's settings for `embargo serve` (docs/design.md §5). The daemon's live heap is small (2 to 3 MB while reports
// arrive: the store is bbolt's memory map, outside the heap), and Go's
// default (GOGC=100, a heap goal of twice the live heap and at least 4 MB)
// then collects 70 to 80 times a second under load: measured, a third of the
// CPU of every report. A goal of five times the live heap cuts the CPU per
// report by about 30% for 10 MB more memory; the soft memory limit keeps a
// large heap (a release to a million subscribers) from growing to five
// times its size: near the limit the collector runs more often instead.
// GOGC and GOMEMLIMIT in the environment, Go's own settings, win.
const (
	serveGCPercent   = 400
	serveMemoryLimit = 256 << 20
)

// gcSettings applies the daemon's settings where the environment (looked
// up by getenv) sets none, and says what is in force: the GC percentage
// (negative: off) and the memory limit in bytes.
func gcSettings(getenv func(string) string) (percent int, limit int64) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(serveMemoryLimit)
	}
	m := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(m) // read, not set and put back: GOGC=off reads as -1 (the uint64 of -1)
	return int(m[0].Value.Uint64()), int64(m[1].Value.Uint64())
}
