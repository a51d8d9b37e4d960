package main

import (
	"runtime/debug"
	"testing"
)

// TestGCSettings: serve raises the GC goal and bounds the heap unless the
// environment sets GOGC or GOMEMLIMIT, which then win (docs/design.md §5).
func TestGCSettings(t *testing.T) {
	oldPercent := debug.SetGCPercent(100)
	oldLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
	})
	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}

	p, l := gcSettings(env(nil))
	if p != serveGCPercent || l != serveMemoryLimit {
		t.Fatalf("no environment: gogc %d, limit %d; want %d, %d", p, l, serveGCPercent, serveMemoryLimit)
	}

	debug.SetGCPercent(150)
	debug.SetMemoryLimit(1 << 40)
	p, l = gcSettings(env(map[string]string{"GOGC": "150", "GOMEMLIMIT": "1TiB"}))
	if p != 150 || l != 1<<40 {
		t.Fatalf("GOGC and GOMEMLIMIT set: gogc %d, limit %d; want the environment's 150, %d", p, l, int64(1)<<40)
	}

	debug.SetGCPercent(-1) // GOGC=off
	p, _ = gcSettings(env(map[string]string{"GOGC": "off"}))
	if p != -1 {
		t.Fatalf("GOGC=off: gogc %d, want -1 (off)", p)
	}
}
