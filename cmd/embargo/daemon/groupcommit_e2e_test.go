package daemon_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
)

// TestGroupCommitEndToEnd: reports from 8 SMTP clients at once share
// commits, and each is answered only after its own group's commit: 250
// when it committed, 451 4.3.0 when its group's commit failed, in which
// case nothing of that report is stored (docs/threat-model.md A1). Every
// second group of several reports fails here.
func TestGroupCommitEndToEnd(t *testing.T) {
	const clients, each = 8, 6
	mids := make([]string, 0, clients*each)
	for c := range clients {
		for i := range each {
			mids = append(mids, fmt.Sprintf("gc-%d-%d@out.test", c, i))
		}
	}
	var mu sync.Mutex
	calls, groups, failed := 0, 0, 0
	committed := map[string]bool{}
	o := daemon.WithGroupCommit(daemon.Options{NoTick: true}, func(tx *bolt.Tx, n int) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			time.Sleep(100 * time.Millisecond) // the others queue up
		}
		// The group's reports: the delivery worker's claims and outcomes
		// share the commits too, so n counts more than reports.
		var mine []string
		for _, mid := range mids {
			if _, stored := incidentdb.IncidentOf(tx, mid); stored && !committed[mid] {
				mine = append(mine, mid)
			}
		}
		if len(mine) == 0 {
			return nil
		}
		groups++
		if len(mine) >= 2 && groups%2 == 0 {
			failed += len(mine)
			return errors.New("injected: the group's fdatasync failed")
		}
		for _, mid := range mine {
			committed[mid] = true
		}
		return nil
	})
	h := daemontest.New(t, daemontest.Config{Extra: "max_connections_per_ip = 50\n[intake]\nnew_incidents_per_client_per_hour = 0\n"}, o)
	codes := map[string]int{}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				from := fmt.Sprintf("rep%d-%d@out.test", c, i)
				mid := fmt.Sprintf("gc-%d-%d@out.test", c, i)
				raw := fmt.Sprintf("From: %s\nTo: security@ex.test\nSubject: report\nMessage-ID: <%s>\n\ndetails\n", from, mid)
				code, enh := daemontest.Code(h.Send(from, []string{"security@ex.test"}, raw))
				if code != 0 && (code != 451 || enh != "4.3.0") {
					t.Errorf("%s: %d %s, want 250 or 451 4.3.0", mid, code, enh)
				}
				mu.Lock()
				codes[mid] = code
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	ok, refused := 0, 0
	h.D.View(func(tx *bolt.Tx) error {
		for mid, code := range codes {
			_, stored := incidentdb.IncidentOf(tx, mid)
			switch {
			case code == 0 && !stored:
				t.Errorf("%s was answered 250 but is not stored", mid)
			case code != 0 && stored:
				t.Errorf("%s was answered %d but is stored", mid, code)
			case code == 0:
				ok++
			default:
				refused++
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if refused == 0 || refused != failed || ok+refused != clients*each {
		t.Fatalf("%d answered 250, %d answered 451; %d were in failed groups of %d groups", ok, refused, failed, groups)
	}
	if groups >= clients*each {
		t.Errorf("%d commits for %d reports: no group commit", groups, clients*each)
	}
	t.Logf("%d reports in %d commits: %d stored, %d refused with their group", clients*each, groups, ok, refused)
}
