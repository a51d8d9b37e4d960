package keys

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// expiryWarning is how far ahead LoadPinned warns of a key's expiry.
const expiryWarning = 30 * 24 * time.Hour

// A Keyring is a set of trusted keys, looked up only by primary fingerprint.
// It is immutable once built; a nil *Keyring is empty.
type Keyring struct {
	keys  []*Key
	byFpr map[string]*Key
}

// NewKeyring returns a keyring holding keys; a repeated fingerprint keeps the
// first. Keys are not checked here: Verify and Decrypt check the signer's
// state at the time of use.
func NewKeyring(keys ...*Key) *Keyring {
	kr := &Keyring{byFpr: make(map[string]*Key, len(keys))}
	for _, k := range keys {
		if k == nil {
			continue
		}
		if _, dup := kr.byFpr[k.fpr]; dup {
			continue
		}
		kr.byFpr[k.fpr] = k
		kr.keys = append(kr.keys, k)
	}
	return kr
}

// Lookup returns the key with primary fingerprint fpr (hex, any case, spaces
// ignored).
func (kr *Keyring) Lookup(fpr string) (*Key, bool) {
	if kr == nil {
		return nil, false
	}
	k, ok := kr.byFpr[normalizeFingerprint(fpr)]
	return k, ok
}

// Keys returns the keys in the order they were added.
func (kr *Keyring) Keys() []*Key {
	if kr == nil {
		return nil
	}
	return append([]*Key(nil), kr.keys...)
}

// Len returns the number of keys.
func (kr *Keyring) Len() int {
	if kr == nil {
		return 0
	}
	return len(kr.keys)
}

func (kr *Keyring) entities() openpgp.EntityList {
	if kr == nil {
		return nil
	}
	el := make(openpgp.EntityList, len(kr.keys))
	for i, k := range kr.keys {
		el[i] = k.e
	}
	return el
}

// keyOf maps an entity found by go-crypto back to the trusted Key, by
// fingerprint, never by pointer or address.
func (kr *Keyring) keyOf(e *openpgp.Entity) (*Key, bool) {
	if e == nil {
		return nil, false
	}
	return kr.Lookup(fmt.Sprintf("%X", e.PrimaryKey.Fingerprint))
}

func normalizeFingerprint(s string) string {
	s = strings.ToUpper(strings.Join(strings.Fields(s), ""))
	return strings.TrimPrefix(s, "0X")
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// A Pin binds a member's address to the primary fingerprint of their key
// (docs/threat-model.md D5). The address is for reports only: keys are found by
// fingerprint, never by address.
type Pin struct {
	Email       string
	Fingerprint string
}

// A Problem is something wrong, or soon to be wrong, with a pinned key.
type Problem struct {
	Email       string
	Fingerprint string
	// Err wraps ErrKeyMissing, ErrKeyExpired, ErrKeyRevoked,
	// ErrWeakAlgorithm, ErrSHA1Binding, ErrNoEncryptionKey, ErrNoSigningKey
	// or ErrUnsupportedKey; for warnings, ErrKeyExpiring or
	// ErrEmailMismatch.
	Err error
	// Warning is true when the key is still usable and is in the keyring.
	Warning bool
	// DaysLeft is the number of days, rounded up, until the key expires;
	// set for ErrKeyExpiring.
	DaysLeft int
}

func (p Problem) String() string {
	kind := "error"
	if p.Warning {
		kind = "warning"
	}
	return fmt.Sprintf("%s: %s %s: %v", kind, p.Email, p.Fingerprint, p.Err)
}

// LoadPinned reads every *.asc file in dir (each may hold several armored
// keys) and returns a keyring of the pinned keys that pass Check at now.
// Keys nobody pins are ignored. Each pinned key that is missing or unusable
// gets a Problem (and stays out of the keyring); a usable key that expires
// within 30 days, or whose user IDs lack the pinned address, gets a warning
// Problem. A pin that is not a fingerprint is an error; so is a directory
// that cannot be read. An unreadable key file is reported through the
// Problems of the pins it might have served.
func LoadPinned(dir string, pins []Pin, now time.Time) (*Keyring, []Problem, error) {
	type pin struct {
		Pin
		fpr string
	}
	norm := make([]pin, 0, len(pins))
	var problems []Problem
	for _, p := range pins {
		f := normalizeFingerprint(p.Fingerprint)
		switch {
		case !isHex(f):
			return nil, nil, fmt.Errorf("%w: %q for %s", ErrBadFingerprint, p.Fingerprint, p.Email)
		case len(f) == 40:
			norm = append(norm, pin{p, f})
		case len(f) == 32:
			// v3 fingerprints are MD5 over the key material (RFC 4880 §12.2).
			problems = append(problems, Problem{Email: p.Email, Fingerprint: f,
				Err: fmt.Errorf("%w: v3 key (MD5 fingerprint)", ErrWeakAlgorithm)})
		case len(f) == 64:
			problems = append(problems, Problem{Email: p.Email, Fingerprint: f,
				Err: fmt.Errorf("%w: v6 key; gpg 2.2 cannot use it", ErrUnsupportedKey)})
		default:
			return nil, nil, fmt.Errorf("%w: %q for %s", ErrBadFingerprint, p.Fingerprint, p.Email)
		}
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: member keys: %w", err)
	}
	found := map[string]*Key{}
	var fileErrs []string
	for _, de := range entries {
		if de.IsDir() || !strings.HasSuffix(strings.ToLower(de.Name()), ".asc") {
			continue
		}
		path := filepath.Join(dir, de.Name())
		f, err := os.Open(path)
		if err != nil {
			fileErrs = append(fileErrs, fmt.Sprintf("%s: %v", de.Name(), err))
			continue
		}
		ks, err := ReadPublicKeys(f)
		f.Close()
		if err != nil {
			fileErrs = append(fileErrs, fmt.Sprintf("%s: %v", de.Name(), err))
			continue
		}
		for _, k := range ks {
			// The same key in two files: keep the revoked copy, else the
			// one with the newer self-signature (an extended expiry).
			if old, ok := found[k.fpr]; !ok || preferCopy(k, old) {
				found[k.fpr] = k
			}
		}
	}
	sort.Strings(fileErrs)

	var usable []*Key
	for _, p := range norm {
		k, ok := found[p.fpr]
		if !ok {
			err := fmt.Errorf("%w: %s", ErrKeyMissing, p.fpr)
			if len(fileErrs) > 0 {
				err = fmt.Errorf("%w (unreadable key files: %s)", err, strings.Join(fileErrs, "; "))
			}
			problems = append(problems, Problem{Email: p.Email, Fingerprint: p.fpr, Err: err})
			continue
		}
		if err := k.Check(now); err != nil {
			problems = append(problems, Problem{Email: p.Email, Fingerprint: p.fpr, Err: err})
			continue
		}
		usable = append(usable, k)
		if end, ok := k.ExpiresAt(); ok && end.Sub(now) <= expiryWarning {
			days := int(math.Ceil(end.Sub(now).Hours() / 24))
			problems = append(problems, Problem{Email: p.Email, Fingerprint: p.fpr, Warning: true, DaysLeft: days,
				Err: fmt.Errorf("%w: in %d days, on %s", ErrKeyExpiring, days, end.UTC().Format(time.DateOnly))})
		}
		if p.Email != "" && !k.hasEmail(p.Email) {
			problems = append(problems, Problem{Email: p.Email, Fingerprint: p.fpr, Warning: true,
				Err: fmt.Errorf("%w: %s", ErrEmailMismatch, p.Email)})
		}
	}
	return NewKeyring(usable...), problems, nil
}

// preferCopy reports whether copy a of a key should replace copy b. A copy
// carrying a revocation always wins: a revocation must never be lost because
// another file holds an older export of the key.
func preferCopy(a, b *Key) bool {
	ra, rb := len(a.e.Revocations) > 0, len(b.e.Revocations) > 0
	if ra != rb {
		return ra
	}
	sa, _ := a.e.PrimarySelfSignature()
	sb, _ := b.e.PrimarySelfSignature()
	switch {
	case sa == nil:
		return false
	case sb == nil:
		return true
	}
	return sa.CreationTime.After(sb.CreationTime)
}

// errorsIsAny reports whether err matches any of targets.
func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
