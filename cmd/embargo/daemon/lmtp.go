package daemon

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/embargo-project/embargo/smtpd"
)

// LMTPSocketMode lets the MTA's delivery agent (Postfix's lmtp runs as user
// postfix and drops supplementary groups) connect. LMTP grants nothing that
// the SMTP port does not: every check of the SMTP path applies. Narrow it with
// the mode of the socket's directory if other local users must not connect.
const LMTPSocketMode fs.FileMode = 0o666

// startLMTP opens the LMTP listener, if configured, with the SMTP limits. The
// per-IP cap is off: the one peer is the local MTA, which opens up to its
// destination concurrency limit at once.
func (d *Daemon) startLMTP() error {
	if d.cfg.LMTP.Listen == "" {
		return nil
	}
	network, addr := d.cfg.LMTP.Addr()
	l, err := listenLMTP(network, addr)
	if err != nil {
		return fmt.Errorf("lmtp listener: %w", err)
	}
	o := d.cfg.SMTP.ServerOptions()
	o.LMTP, o.Domain, o.MaxConnectionsPerIP = true, d.cfg.Domain, -1
	o = d.withInflight(d.withFreeSpace(o))
	d.lmtp = smtpd.New(o, d.lmtpHandler(), d.log.With("component", "lmtp"))
	d.lmtpAddr = l.Addr()
	d.goRun("lmtp server", func() error { return d.lmtp.Serve(l) }, smtpd.ErrServerClosed, net.ErrClosed)
	url := "lmtp://" + l.Addr().String()
	if network == "unix" {
		url = "unix://" + addr
	}
	d.log.Info("lmtp listening", "lmtp", url)
	return nil
}

// listenLMTP listens on TCP, or on a unix socket that it (re)creates with
// LMTPSocketMode. A socket left behind by a killed daemon is removed; any
// other file at the path is not touched.
func listenLMTP(network, addr string) (net.Listener, error) {
	if network != "unix" {
		return net.Listen(network, addr)
	}
	if fi, err := os.Lstat(addr); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket: remove it or choose another path", addr)
		}
		if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another process (another embargo?)", addr)
		}
		os.Remove(addr)
	}
	if err := os.MkdirAll(filepath.Dir(addr), 0o755); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", addr)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(addr, LMTPSocketMode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
