package main

import (
	"bytes"
	_ "embed"
	"flag"
	"fmt"
	"github.com/embargo-project/embargo/cmd/embargo/config"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/keys"
)

// configTemplate is the commented configuration `embargo init` writes;
// contrib/embargo.toml is its rendering for a production host (a test keeps
// the two equal).
//
//go:embed embargo.toml.tmpl
var configTemplate string

// configVars fill configTemplate.
type configVars struct {
	Domain, DataDir, KeysDir string
	Demo                     bool
	Members                  []config.Member
}

func renderConfig(v configVars) ([]byte, error) {
	t, err := template.New("embargo.toml").Option("missingkey=error").Parse(configTemplate)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// contribVars render contrib/embargo.toml: the paths of the systemd unit
// and the Docker image.
var contribVars = configVars{Domain: "example.org", DataDir: "/var/lib/embargo", KeysDir: "/etc/embargo/keys"}

// demoMembers are the key pairs `embargo init --demo` makes.
var demoMembers = []config.Member{
	{Email: "alice", Name: "Alice Example", Roles: []string{"src"}},
	{Email: "bob", Name: "Bob Example", Roles: []string{"src"}},
	{Email: "packager", Name: "Demo Distribution", Roles: []string{"distributor"}},
}

const initHelp = `Usage: embargo init DIR [--domain DOMAIN] [--data DIR] [--demo] [--force]

Writes DIR/embargo.toml, a configuration with every key commented, creates
the members' key directory DIR/keys, and generates the list key pairs
(security, distributors, announce) and the DKIM key in the data directory
(default DIR/data). Run it as the user embargo will run as, so that the files
it creates (mode 0600, directories 0700) belong to that user.

With --demo the configuration runs on loopback and writes outbound mail to a
Maildir (<data>/outbox) instead of sending it, and three demo members get key
pairs: their public keys go to DIR/keys, their secret keys to DIR/demo (mode
0600), and init prints how to import them into gpg to sign commands.

Examples:
  embargo init ./demo --demo && embargo serve --config ./demo/embargo.toml
  sudo -u embargo embargo init /etc/embargo --domain example.org --data /var/lib/embargo

Flags:
`

func cmdInit(args []string, s stdio) error {
	stdout := s.out
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	domain := fs.String("domain", "example.org", "the domain of the list addresses")
	data := fs.String("data", "", "data directory (data_dir); default DIR/data")
	demo := fs.Bool("demo", false, "loopback demo with a Maildir outbox and three member key pairs")
	force := fs.Bool("force", false, "overwrite an existing DIR/embargo.toml")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), initHelp)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usageError("usage: embargo init DIR")
	}
	dir, err := filepath.Abs(pos[0])
	if err != nil {
		return err
	}
	if *data == "" {
		*data = filepath.Join(dir, "data")
	}
	if *data, err = filepath.Abs(*data); err != nil {
		return err
	}
	v := configVars{Domain: strings.ToLower(*domain), DataDir: *data, KeysDir: filepath.Join(dir, "keys"), Demo: *demo}
	if !config.ValidDomain(v.Domain) {
		return usageError(fmt.Sprintf("--domain %q is not a domain name like example.org", *domain))
	}
	cfgPath := filepath.Join(dir, "embargo.toml")
	if _, err := os.Stat(cfgPath); err == nil && !*force {
		return fmt.Errorf("%s exists: edit it, or add --force to replace it", cfgPath)
	}
	for _, d := range []string{dir, v.KeysDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}

	var secrets []string
	if *demo {
		demoDir := filepath.Join(dir, "demo")
		if err := os.MkdirAll(demoDir, 0o700); err != nil {
			return err
		}
		for _, m := range demoMembers {
			m.Email = m.Email + "@" + v.Domain
			fpr, secret, err := demoKeyPair(m, v.KeysDir, demoDir)
			if err != nil {
				return err
			}
			m.Fingerprint = fpr
			v.Members = append(v.Members, m)
			secrets = append(secrets, secret)
		}
	}

	text, err := renderConfig(v)
	if err != nil {
		return err
	}
	cfg, err := config.Parse(text, cfgPath)
	if err != nil {
		return fmt.Errorf("init: the generated configuration does not validate (a bug): %w", err)
	}
	if err := cfg.Resolve(); err != nil {
		return err
	}
	if err := daemon.WriteFileAtomic(cfgPath, text); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote %s\n", cfgPath)

	ks, err := daemon.LoadKeys(cfg, time.Now(), true)
	if err != nil {
		return err
	}
	for _, name := range config.ListNames() {
		verb := "Kept"
		for _, c := range ks.Created {
			if c == name {
				verb = "Generated"
			}
		}
		fmt.Fprintf(stdout, "%s the %s list key %s (%s)\n", verb, name, ks.Lists[name].Fingerprint(), cfg.ListKeyPath(name))
	}
	if _, created, err := daemon.LoadDKIMKey(cfg, true); err != nil {
		return err
	} else if created {
		fmt.Fprintf(stdout, "Generated the DKIM key %s (RSA-%d)\n", cfg.DKIMKeyPath(), daemon.DKIMRSABits)
	} else {
		fmt.Fprintf(stdout, "Kept the DKIM key %s\n", cfg.DKIMKeyPath())
	}

	printNext(stdout, v, cfgPath, secrets)
	return nil
}

// printNext tells what init made and what to do next: for a demo, how to
// sign commands as its members.
func printNext(stdout io.Writer, v configVars, cfgPath string, secrets []string) {
	if v.Demo {
		fmt.Fprintf(stdout, "\nDemo members (public keys in %s, secret keys in %s, mode 0600):\n", v.KeysDir, filepath.Dir(secrets[0]))
		for _, m := range v.Members {
			fmt.Fprintf(stdout, "  %-28s %s  %s\n", m.Email, m.Fingerprint, strings.Join(m.Roles, ","))
		}
		fmt.Fprintf(stdout, "\nTo sign commands as a demo member, import their secret key into gpg\n(a throw-away GNUPGHOME keeps your own keyring clean):\n\n")
		fmt.Fprintf(stdout, "  export GNUPGHOME=$(mktemp -d)\n")
		for _, f := range secrets {
			fmt.Fprintf(stdout, "  gpg --batch --import %s\n", f)
		}
		fmt.Fprintf(stdout, "  embargo keys export security --config %s | gpg --import\n", cfgPath)
		fmt.Fprintf(stdout, "  gpg --clearsign -u %s commands.txt\n", v.Members[0].Email)
	}
	fmt.Fprintf(stdout, "\nNext:\n")
	step := 1
	if !v.Demo {
		fmt.Fprintf(stdout, "  %d. edit %s: members and their fingerprints (keys in %s), relay\n", step, cfgPath, v.KeysDir)
		step++
	}
	fmt.Fprintf(stdout, "  %d. embargo check --config %s   (validates it and prints the DNS records to publish)\n", step, cfgPath)
	fmt.Fprintf(stdout, "  %d. embargo serve --config %s\n", step+1, cfgPath)
	fmt.Fprintf(stdout, "  %d. publish the security key for reporters: embargo keys export security --config %s\n", step+2, cfgPath)
}

// demoKeyPair makes a member key pair: the public key into keysDir, the
// secret key into secretDir. It returns the fingerprint and the secret file.
func demoKeyPair(m config.Member, keysDir, secretDir string) (fpr, secretFile string, err error) {
	k, err := keys.GenerateListKey(m.Name, m.Email, keys.Options{})
	if err != nil {
		return "", "", err
	}
	pub, err := k.ArmoredPublic()
	if err != nil {
		return "", "", err
	}
	sec, err := k.ArmoredPrivate(nil, keys.Options{})
	if err != nil {
		return "", "", err
	}
	local, _, _ := strings.Cut(m.Email, "@")
	secretFile = filepath.Join(secretDir, local+".secret.asc")
	if err := daemon.WriteFileAtomic(filepath.Join(keysDir, local+".asc"), pub); err != nil {
		return "", "", err
	}
	if err := daemon.WriteFileAtomic(secretFile, sec); err != nil {
		return "", "", err
	}
	return k.Fingerprint(), secretFile, nil
}
