package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/keys"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/durable"
)

// Keys is every key the daemon uses: one key pair per list, generated at
// first start, and the members' pinned public keys.
type Keys struct {
	Lists    map[string]*keys.Key // by list name
	Created  []string             // lists whose key this load generated
	Members  *keys.Keyring
	Problems []keys.Problem // members' keys missing, expiring, weak…
}

// Passphrase reads the list keys' passphrase from the configured file or
// EMBARGO_KEY_PASSPHRASE. nil means the keys are not passphrase-protected.
func Passphrase(cfg *config.Config) ([]byte, error) {
	if cfg.KeyPassphraseFile != "" {
		b, err := os.ReadFile(cfg.KeyPassphraseFile)
		if err != nil {
			return nil, fmt.Errorf("key_passphrase_file: %w", err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return nil, fmt.Errorf("key_passphrase_file %s is empty", cfg.KeyPassphraseFile)
		}
		return []byte(p), nil
	}
	if p := os.Getenv("EMBARGO_KEY_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	return nil, nil
}

// ListKey loads a list's key pair, generating it if it does not exist yet.
func ListKey(cfg *config.Config, list string, now time.Time) (k *keys.Key, created bool, err error) {
	pass, err := Passphrase(cfg)
	if err != nil {
		return nil, false, err
	}
	return listKey(cfg, list, pass, now)
}

func listKey(cfg *config.Config, list string, pass []byte, now time.Time) (*keys.Key, bool, error) {
	if err := durable.MkdirAll(filepath.Join(cfg.DataDir, "keys")); err != nil {
		return nil, false, fmt.Errorf("keys directory: %w", err)
	}
	path := cfg.ListKeyPath(list)
	k, created, err := keys.LoadOrCreateListKey(path, cfg.Domain+" "+list+" list", cfg.Lists[list].Address, pass,
		keys.Options{Now: func() time.Time { return now }})
	if err != nil {
		return nil, false, fmt.Errorf("%s list key %s: %w", list, path, err)
	}
	return k, created, nil
}

// LoadKeys loads the list keys and the members' pinned keys from keys_dir.
// With generate, a missing list key is generated; without, it is left out
// (embargo check creates nothing).
func LoadKeys(cfg *config.Config, now time.Time, generate bool) (*Keys, error) {
	ks, err := loadListKeys(cfg, now, generate)
	if err != nil {
		return nil, err
	}
	if ks.Members, ks.Problems, err = loadMemberKeys(cfg, now); err != nil {
		return nil, err
	}
	return ks, nil
}

func loadListKeys(cfg *config.Config, now time.Time, generate bool) (*Keys, error) {
	pass, err := Passphrase(cfg)
	if err != nil {
		return nil, err
	}
	ks := &Keys{Lists: map[string]*keys.Key{}}
	for _, name := range config.ListNames() {
		if !generate {
			if _, err := os.Stat(cfg.ListKeyPath(name)); errors.Is(err, os.ErrNotExist) {
				continue
			}
		}
		k, created, err := listKey(cfg, name, pass, now)
		if err != nil {
			return nil, err
		}
		if created {
			ks.Created = append(ks.Created, name)
		}
		ks.Lists[name] = k
	}
	return ks, nil
}

// loadMemberKeys reads the keys the members' fingerprints pin from keys_dir.
func loadMemberKeys(cfg *config.Config, now time.Time) (*keys.Keyring, []keys.Problem, error) {
	var pins []keys.Pin
	for _, m := range cfg.Members {
		if m.Fingerprint != "" {
			pins = append(pins, keys.Pin{Email: m.Email, Fingerprint: m.Fingerprint})
		}
	}
	if len(pins) == 0 {
		return keys.NewKeyring(), nil, nil
	}
	if cfg.KeysDir == "" {
		return nil, nil, fmt.Errorf("%d member(s) pin a fingerprint but keys_dir is not set: set keys_dir to the directory holding their *.asc public keys", len(pins))
	}
	ring, probs, err := keys.LoadPinned(cfg.KeysDir, pins, now)
	if err != nil {
		return nil, nil, fmt.Errorf("member keys in %s: %w", cfg.KeysDir, err)
	}
	return ring, probs, nil
}

// ProblemLines describes the member key problems for an operator.
func (ks *Keys) ProblemLines() []string {
	var out []string
	for _, p := range ks.Problems {
		line := fmt.Sprintf("member %s, key %s: %v", p.Email, p.Fingerprint, p.Err)
		switch {
		case p.Warning && p.DaysLeft > 0:
			line += fmt.Sprintf(" (expires in %d days: extend it with gpg --quick-set-expire and put the new public key in keys_dir)", p.DaysLeft)
		case errors.Is(p.Err, keys.ErrKeyMissing):
			line += ": export it with `gpg --armor --export " + p.Fingerprint + " > keys_dir/" + p.Email + ".asc`"
		case !p.Warning:
			line += ": this member gets no encrypted mail and no signed command from them counts"
		}
		out = append(out, line)
	}
	return out
}
