package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// certHolder serves the SMTP listener's certificate through
// tls.Config.GetCertificate, so a renewed certificate (certbot, acme.sh) takes
// effect on SIGHUP without a restart and without dropping connections: each
// handshake reads the current one.
type certHolder struct {
	certFile, keyFile string

	mu   sync.RWMutex
	cert *tls.Certificate
}

// certExpiryWarning is how long before expiry check and the start-up log warn.
const certExpiryWarning = 14 * 24 * time.Hour

func newCertHolder(certFile, keyFile string) (*certHolder, error) {
	h := &certHolder{certFile: certFile, keyFile: keyFile}
	if err := h.reload(); err != nil {
		return nil, err
	}
	return h, nil
}

// reload reads the files again. On any error the certificate in use stays.
func (h *certHolder) reload() error {
	c, err := loadCertificate(h.certFile, h.keyFile)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.cert = c
	h.mu.Unlock()
	return nil
}

func (h *certHolder) current() *tls.Certificate {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.cert
}

func (h *certHolder) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return h.current(), nil
}

// tlsConfig is the server side of STARTTLS (RFC 3207). The minimum version is
// Go's default (TLS 1.2). Opportunistic STARTTLS falls back to plaintext when
// a handshake fails, so a stricter floor would not make mail safer.
func (h *certHolder) tlsConfig() *tls.Config {
	return &tls.Config{GetCertificate: h.getCertificate}
}

// loadCertificate reads a PEM certificate chain and its key and checks that
// they match, that the key is not readable by others, and that the leaf is
// currently valid.
func loadCertificate(certFile, keyFile string) (*tls.Certificate, error) {
	fi, err := os.Stat(keyFile)
	if err != nil {
		return nil, fmt.Errorf("smtp.tls_key: %w", err)
	}
	// Group-readable is usual (the ssl-cert group); world-readable is not.
	if fi.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("smtp.tls_key %s is readable by others (mode %04o): run `chmod o-rwx %s`", keyFile, fi.Mode().Perm(), keyFile)
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("smtp.tls_cert/tls_key: %w", err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("smtp.tls_cert %s: %w", certFile, err)
		}
	}
	if now := time.Now(); now.After(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("smtp.tls_cert %s expired on %s: renew it, then `systemctl reload embargo` (SIGHUP)", certFile, c.Leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	return &c, nil
}

// certWarning says when a certificate is about to expire, or "".
func certWarning(c *tls.Certificate, now time.Time) string {
	if c == nil || c.Leaf == nil {
		return ""
	}
	if left := c.Leaf.NotAfter.Sub(now); left < certExpiryWarning {
		return fmt.Sprintf("the SMTP certificate expires on %s (in %d days): renew it and send SIGHUP", c.Leaf.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24))
	}
	return ""
}

// loadTLS loads the SMTP certificate if one is configured.
func (d *Daemon) loadTLS() error {
	if d.cfg.SMTP.TLSCert == "" {
		return nil
	}
	h, err := newCertHolder(d.cfg.SMTP.TLSCert, d.cfg.SMTP.TLSKey)
	if err != nil {
		return err
	}
	d.certs = h
	if w := certWarning(h.current(), time.Now()); w != "" {
		d.log.Warn(w)
	}
	return nil
}

// tlsConfig is the SMTP listener's STARTTLS configuration; nil without a
// certificate, which switches STARTTLS off.
func (d *Daemon) tlsConfig() *tls.Config {
	if d.certs == nil {
		return nil
	}
	return d.certs.tlsConfig()
}

// reloadCert reads the TLS certificate again (Reload). A failure is
// logged and the certificate in use stays.
func (d *Daemon) reloadCert() error {
	var errs []error
	if d.certs != nil {
		if err := d.certs.reload(); err != nil {
			d.log.Error("reload: keeping the current certificate", "err", err)
			errs = append(errs, err)
		} else {
			leaf := d.certs.current().Leaf
			d.log.Info("reload: certificate loaded", "subject", leaf.Subject.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
			if w := certWarning(d.certs.current(), time.Now()); w != "" {
				d.log.Warn(w)
			}
		}
	}
	return errors.Join(errs...)
}
