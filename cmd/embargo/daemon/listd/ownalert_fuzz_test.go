package listd

import (
	"bytes"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The checks of the render fuzzers of the alerts whose values are the
// service's own or the operator's (ackcap_fuzz_test.go,
// limits_fuzz_test.go, reload_fuzz_test.go, quarantine_fuzz_test.go):
// the acknowledgement cap, the intake limits, a configuration not
// reloaded, a message in quarantine. The values come from a clock, a
// count, the configuration, an envelope or an error text; each fuzzer
// makes them hostile, and reaches the alert by the path the daemon takes.

// maxAlertText bounds the text of one of those alerts, whatever the
// values in it: a fixed template with a few short values, or the
// problems of a configuration, which AlertConfig cuts to
// maxProblemLines of at most maxQuotedLine bytes.
const maxAlertText = 24 << 10

// fuzzYears is how far after mon the fuzzers' clocks may run.
const fuzzYears = 100

// fuzzClock is an instant up to fuzzYears after mon, to the minute.
func fuzzClock(minutes uint32) time.Time {
	return mon.Add(time.Duration(int64(minutes)%(fuzzYears*366*24*60)) * time.Minute)
}

// checkAlerts checks every row queued after row after (checkQueued:
// clean CRLF, no field but the service's, sealed to each member and
// readable by them, no command block for the committee,
// docs/threat-model.md B2, B10, D6, E5) and the text of each alert of
// kind as its member's client shows it (checkQuotedText: UTF-8, no
// control or format character, no line that starts with "/"), no longer
// than maxAlertText and without canary (a value the alert must not
// quote, "" for none). It fails unless there are want of them, and
// returns them.
func checkAlerts(t *testing.T, s *Service, db *bolt.DB, k *storeKeys, after uint64, kind string, want int, canary string) []madeCopy {
	t.Helper()
	var alerts []madeCopy
	kinds := map[string]int{}
	for _, c := range checkQueued(t, s, db, after, k.readers()) {
		kinds[c.Kind]++
		if c.Kind != kind {
			continue
		}
		alerts = append(alerts, c)
		if !c.Sealed {
			t.Fatalf("%s to %v: not encrypted", c.Kind, c.To)
		}
		checkQuotedText(t, c)
		if len(c.Text) > maxAlertText {
			t.Fatalf("%s to %v: %d bytes of text, more than %d", c.Kind, c.To, len(c.Text), maxAlertText)
		}
		if canary != "" && (bytes.Contains(c.Inner, []byte(canary)) || bytes.Contains(c.Out, []byte(canary))) {
			t.Fatalf("%s to %v quotes %q", c.Kind, c.To, canary)
		}
	}
	if len(alerts) != want {
		t.Fatalf("queued %v, want %d of %s", kinds, want, kind)
	}
	return alerts
}
