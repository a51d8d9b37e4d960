package daemon

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/durable"
)

// DKIMRSABits is the size of generated keys: RFC 8301 §3.2 asks signers for at
// least 2048 bits, and 2048 still fits a TXT record every DNS host accepts.
const DKIMRSABits = 2048

// LoadDKIMKey reads the configured key. With generate, a missing key at the
// default path is created; a missing key named by key_file is an error, as a
// typing mistake there must not silently replace the published key.
func LoadDKIMKey(cfg *config.Config, generate bool) (signer crypto.Signer, created bool, err error) {
	path := cfg.DKIMKeyPath()
	if path == "" {
		return nil, false, errors.New("dkim: no selector configured")
	}
	_, err = os.Stat(path)
	if errors.Is(err, os.ErrNotExist) && generate && cfg.DKIM.KeyFile == "" {
		k, err := generateDKIMKey(path)
		return k, err == nil, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("dkim key: %w", err)
	}
	k, err := readDKIMKey(path)
	return k, false, err
}

// generateDKIMKey writes a new RSA key as PKCS #8 PEM, mode 0600.
func generateDKIMKey(path string) (crypto.Signer, error) {
	k, err := rsa.GenerateKey(rand.Reader, DKIMRSABits)
	if err != nil {
		return nil, fmt.Errorf("dkim: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("dkim: encode key: %w", err)
	}
	if err := durable.MkdirAll(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// The name too, or a power loss replaces the published key.
		err = durable.SyncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	return k, nil
}

// readDKIMKey reads a PEM private key and refuses a weak or exposed one.
func readDKIMKey(path string) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		// docs/threat-model.md D10: whoever reads this key can sign mail as the lists.
		return nil, fmt.Errorf("dkim key %s is readable by group or others (mode %04o): run `chmod 600 %s`", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("dkim key %s is not PEM: expected a -----BEGIN PRIVATE KEY----- block (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048)", path)
	}
	var key any
	switch blk.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("dkim key %s: PEM block %q is not a private key", path, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim key %s: %w", path, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < DKIMRSABits {
			return nil, fmt.Errorf("dkim key %s has %d bits: RFC 8301 wants at least 2048; generate a new one and publish it under a new selector", path, k.N.BitLen())
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("dkim key %s: %T keys are not supported: use RSA (2048 bits) or Ed25519", path, key)
}

// withDKIM wraps relay in a signing relay when [dkim] is configured.
func withDKIM(cfg *config.Config, relay queue.Relay, log *slog.Logger) (queue.Relay, error) {
	if cfg.DKIM.Selector == "" {
		return relay, nil
	}
	k, created, err := LoadDKIMKey(cfg, true)
	if err != nil {
		return nil, err
	}
	if created {
		log.Warn("dkim key generated: publish its DNS record (embargo check prints it) or receivers will fail the signatures",
			"path", cfg.DKIMKeyPath(), "record", cfg.DKIM.Selector+"._domainkey."+cfg.Domain)
	}
	r, err := queue.NewDKIMRelay(relay, queue.DKIMOptions{Domain: cfg.Domain, Selector: cfg.DKIM.Selector, Signer: k})
	if err != nil {
		return nil, err
	}
	log.Info("dkim signing on", "domain", cfg.Domain, "selector", cfg.DKIM.Selector)
	return r, nil
}

// dkimRecord returns the TXT value that publishes k's public half (RFC 6376
// §3.6.1).
func dkimRecord(k crypto.Signer) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		return "", err
	}
	alg := "rsa"
	if _, ok := k.Public().(ed25519.PublicKey); ok {
		// RFC 8463 §4.2: the bare 32-byte key, not SubjectPublicKeyInfo.
		alg = "ed25519"
		der = k.Public().(ed25519.PublicKey)
	}
	return "v=DKIM1; k=" + alg + "; p=" + base64.StdEncoding.EncodeToString(der), nil
}

// txtStrings splits a TXT value into quoted strings of at most 255 bytes (RFC
// 1035 §3.3.14): a 2048-bit key does not fit in one.
func txtStrings(v string) string {
	var parts []string
	for len(v) > 255 {
		parts = append(parts, `"`+v[:255]+`"`)
		v = v[255:]
	}
	parts = append(parts, `"`+v+`"`)
	if len(parts) == 1 {
		return parts[0]
	}
	return "( " + strings.Join(parts, "\n\t\t\t\t") + " )"
}

// dkimDNS is the DKIM record to publish: the public half of the key, read
// but never created (embargo serve generates a missing default key).
func dkimDNS(cfg *config.Config) config.DNSRecord {
	path := cfg.DKIMKeyPath()
	if path == "" {
		return config.DNSRecord{Notes: []string{`not configured: add [dkim] selector = "embargo" to sign (embargo init does), or let the relaying MTA sign.`}}
	}
	k, err := readDKIMKey(path)
	if errors.Is(err, os.ErrNotExist) && cfg.DKIM.KeyFile == "" {
		return config.DNSRecord{Notes: []string{"the key " + path + " does not exist yet: embargo serve generates it at its first start; run check again then."}}
	}
	if err != nil {
		return config.DNSRecord{Notes: []string{fmt.Sprintf("cannot read the key: %v", err)}}
	}
	rec, err := dkimRecord(k)
	if err != nil {
		return config.DNSRecord{Notes: []string{fmt.Sprintf("cannot encode the key: %v", err)}}
	}
	return config.DNSRecord{Name: cfg.DKIM.Selector + "._domainkey." + cfg.Domain + ".", Type: "TXT", Value: txtStrings(rec)}
}
