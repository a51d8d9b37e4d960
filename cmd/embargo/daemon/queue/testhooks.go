package queue

// TestHooks are failpoints for tests, which set them with SetTestHooks:
// each step boundary of a delivery, where the tests that kill the process
// at every step make it die (docs/design.md §1). They are not part of
// Options, and embargo never sets them: nil, each costs one comparison.
type TestHooks struct {
	// Claimed runs on Run's goroutine once a claim committed, with the
	// rows it marked "sending", before any of them reaches a sender.
	Claimed func(rows []Row)
	// Answered runs on Run's goroutine with the rows the relay accepted
	// (a 250 for every recipient), before their outcomes are committed:
	// a death here sends them again, the one duplicate the queue allows
	// (docs/threat-model.md A3).
	Answered func(rows []Row)
	// Recorded runs on Run's goroutine once the outcomes of rows were
	// committed (delivered rows deleted, failures and retries marked).
	Recorded func(rows []Row)
}

// SetTestHooks installs failpoints, for tests only. Call it before Run.
func (w *Worker) SetTestHooks(h TestHooks) { w.hooks = h }

// answered runs the Answered hook before Run's commit.
func (w *Worker) answered(outs []outcome) {
	if w.hooks.Answered == nil {
		return
	}
	if rows := rowsOf(outs, true); len(rows) > 0 {
		w.hooks.Answered(rows)
	}
}

// committed runs the Recorded and Claimed hooks after Run's commit, which
// recorded outs and claimed claimed (err: it failed).
func (w *Worker) committed(outs []outcome, claimed []Row, err error) {
	if err != nil {
		return
	}
	if w.hooks.Recorded != nil {
		if rows := rowsOf(outs, false); len(rows) > 0 {
			w.hooks.Recorded(rows)
		}
	}
	if w.hooks.Claimed != nil && len(claimed) > 0 {
		w.hooks.Claimed(claimed)
	}
}

// rowsOf are the rows of outs; with delivered, only those the relay
// accepted for every recipient.
func rowsOf(outs []outcome, delivered bool) []Row {
	var rows []Row
	for _, o := range outs {
		if !o.interrupted && (!delivered || o.err == nil && !o.untried) {
			rows = append(rows, o.row)
		}
	}
	return rows
}
