package announce

// TestHooks are failpoints for tests, which set them with SetTestHooks:
// the step boundaries of a release, where the tests that kill the process
// at every step make it die (docs/design.md §1). Options.OnBatch is the
// one before a batch is sent. They are not part of Options, and embargo
// never sets them: nil, each costs one comparison.
type TestHooks struct {
	// Begun runs once the commit that began a release (its subscribers
	// fixed, its cursor at the start) is done, with the release's ID.
	Begun func(release string)
	// Answered runs before the commit that records a batch the relay
	// answered, with the batch's recipients: a death here sends the
	// batch again (at most one per connection, docs/threat-model.md A3).
	Answered func(release string, rcpts []string)
	// Recorded runs once that commit is done (the cursor moved over the
	// batch), with the same recipients.
	Recorded func(release string, rcpts []string)
}

// SetTestHooks installs failpoints, for tests only. Call it before Run.
func (f *Fanout) SetTestHooks(h TestHooks) { f.hooks = h }

// batchHook runs hook, if set, for each batch of rs.
func batchHook(hook func(release string, rcpts []string), rs []result) {
	if hook == nil {
		return
	}
	for _, r := range rs {
		to := make([]string, len(r.wk.rcpts))
		for i, rc := range r.wk.rcpts {
			to[i] = rc.addr
		}
		hook(r.wk.job.ID, to)
	}
}
