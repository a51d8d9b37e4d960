package daemon

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest/powerfs"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/durable"
)

// TestKeysSurvivePowerLoss: the list keys and the DKIM key that a first start
// generates survive a power cut (docs/threat-model.md A1): their files, the
// keys directory and its name in the data directory are synced. Otherwise the
// next start generates new keys, and reporters encrypt to a key embargo no
// longer has, receivers check signatures against a DNS record of another
// key. Each key is generated alone, then the power is cut. So is a data
// directory two levels deep that does not exist yet (the store's, made by
// the first start): without it the store, its marker and the keys go.
func TestKeysSurvivePowerLoss(t *testing.T) {
	if err := powerfs.Available(); err != nil {
		t.Skipf("SKIP: the power-loss file system needs FUSE: %v", err)
	}
	for _, name := range []string{"security", "dkim", "data-dir"} {
		t.Run(name, func(t *testing.T) {
			disk := powerfs.New()
			mnt := t.TempDir()
			m, err := disk.Mount(mnt)
			if err != nil {
				t.Fatal(err)
			}
			dataDir := mnt
			if name == "data-dir" {
				dataDir = filepath.Join(mnt, "var", "embargo")
			}
			cfg, err := config.Parse([]byte("domain = \"ex.test\"\ndata_dir = \""+dataDir+"\"\n[dkim]\nselector = \"s\"\n"), "test")
			if err != nil {
				t.Fatal(err)
			}
			path := cfg.ListKeyPath(name)
			switch name {
			case "dkim":
				path = cfg.DKIMKeyPath()
				_, _, err = LoadDKIMKey(cfg, true)
			case "data-dir":
				path = filepath.Join(dataDir, CreatedFile)
				if err = durable.MkdirAll(dataDir); err == nil {
					err = writeMarker(dataDir, "created") // as createStore does
				}
			default:
				_, _, err = ListKey(cfg, name, time.Now())
			}
			if err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			r, err := m.Cut(nil)
			if err != nil {
				t.Fatal(err)
			}
			m, err = disk.Mount(mnt)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Unmount()
			after, err := os.ReadFile(path)
			if err != nil || string(after) != string(before) {
				t.Errorf("%s after a power cut: %v (names not synced at the cut: %q)", filepath.Base(path), err, r.LostNames)
			}
		})
	}
}
