package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

const versionHelp = `Usage: embargo version

Prints embargo's version, the Go version it was built with and, when the
build recorded it, the source revision. Release builds set the version with
-ldflags "-X main.version=v1.2.3".

Examples:
  embargo version
`

func cmdVersion(args []string, s stdio) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), versionHelp) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("version takes no arguments")
	}
	_, err := fmt.Fprintln(s.out, versionString())
	return err
}

// versionString is "embargo VERSION (goX.Y.Z, REVISION)".
func versionString() string {
	v := version
	extra := []string{runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "+modified"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			extra = append(extra, rev+modified)
		}
	}
	return fmt.Sprintf("embargo %s (%s)", v, strings.Join(extra, ", "))
}

const healthcheckHelp = `Usage: embargo healthcheck [--config FILE] [--addr HOST:PORT] [--timeout DURATION]

Exits 0 if the daemon's SMTP listener answers with a 220 greeting, 1
otherwise. It needs no curl or swaks, which is what a container HEALTHCHECK
wants. The address is smtp.listen from the configuration, with an unspecified
host (0.0.0.0, ::) replaced by loopback.

Examples:
  embargo healthcheck --config /etc/embargo/embargo.toml
  embargo healthcheck --addr 127.0.0.1:2525 --timeout 2s

Flags:
`

func cmdHealthcheck(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("healthcheck", healthcheckHelp, &cf, false)
	addr := fs.String("addr", "", "SMTP address to dial; default smtp.listen")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the greeting")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("healthcheck takes no arguments")
	}
	if *addr == "" {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		*addr = dialable(cfg.SMTP.Listen)
	}
	greeting, err := smtpGreeting(*addr, *timeout)
	if err != nil {
		return fmt.Errorf("healthcheck: %s: %w", *addr, err)
	}
	fmt.Fprintf(s.out, "ok: %s\n", greeting)
	return nil
}

// dialable turns a listen address into one to dial.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// smtpGreeting reads the server's greeting and says QUIT.
func smtpGreeting(addr string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	br := bufio.NewReader(io.LimitReader(c, 4096))
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("no greeting: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if !strings.HasPrefix(line, "220") {
			return "", fmt.Errorf("greeting %q, want 220", line)
		}
		if len(line) < 4 || line[3] == ' ' {
			io.WriteString(c, "QUIT\r\n")
			return line, nil
		}
	}
}
