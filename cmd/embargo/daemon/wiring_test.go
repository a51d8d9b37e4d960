package daemon_test

import (
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/workflow"
)

// TestRotation: [oncall] becomes the rotation workflow counts weeks with.
func TestRotation(t *testing.T) {
	cfg, err := config.Parse([]byte("domain = \"ex.test\"\n[[members]]\nemail = \"alice@ex.test\"\nroles = [\"src\"]\n"+
		"[[members]]\nemail = \"bob@ex.test\"\nroles = [\"src\"]\n[oncall]\nrotation = [\"alice@ex.test\", \"BOB@ex.test\"]\nstart = \"2026-11-23\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	r := daemon.Rotation(cfg)
	if got, _ := workflow.OnCall(r, workflow.OnCallState{}, time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)); got != "bob@ex.test" {
		t.Errorf("on call the week after start: %q, want bob@ex.test", got)
	}
}
