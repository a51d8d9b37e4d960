package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/workflow"
)

// checkReadmeDataMap: the CVE data map the README's incident attaches to
// the release pack reads, with a YAML parser, as krel reads its maps
// (kubernetes/release pkg/notes/notes_map.go, pkg/cve/cve.go): one document,
// keyed by the one pull request of the references (the commit is not one),
// with the CVE's data under datafields.cve and the score a float.
func checkReadmeDataMap(t *testing.T, data []byte, mediaType string) {
	t.Helper()
	if mediaType != "application/yaml" {
		t.Errorf("cve-data-map.yaml is %q, want application/yaml", mediaType)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the release pack's CVE data map is not YAML: %v\n%s", err, data)
		}
		docs = append(docs, doc)
	}
	if len(docs) != 1 || docs[0]["pr"] != 123 {
		t.Fatalf("CVE data map: %d documents %v, want one for pull request 123\n%s", len(docs), docs, data)
	}
	df, _ := docs[0]["datafields"].(map[string]any)
	cve, _ := df["cve"].(map[string]any)
	want := map[string]any{
		"id": "CVE-2026-12345", "title": "heap overflow in the parser",
		"issue":  "https://github.com/example/example/issues/122",
		"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "score": 9.8, "rating": "Critical",
		"linkedPRs": []any{123},
	}
	desc, _ := cve["description"].(string)
	if !strings.HasPrefix(desc, "example-parser in Example from 1.0.0 before 1.2.4 allows a remote attacker") ||
		!strings.HasSuffix(desc, "Affected versions:\n\n- `>= 1.0.0, < 1.2.4`\n\nFixed versions:\n\n- `1.2.4`") {
		t.Errorf("CVE data map description = %q", desc)
	}
	delete(cve, "description")
	if !reflect.DeepEqual(cve, want) {
		t.Errorf("CVE data map datafields.cve =\n%#v, want\n%#v\n%s", cve, want, data)
	}
	t.Logf("CVE data map attached to the release pack:\n%s", data)
}

// releaseReadme works the README's incident with the commands and details
// given, releases it at T and returns alice's release pack.
func releaseReadme(t *testing.T, commands, details string) (string, map[string][]byte) {
	t.Helper()
	start := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	f := newRecordsFixture(t, start, readmeRecordConfig)
	f.clk.Set(start.Add(time.Hour))
	f.command(commands)
	f.clk.Set(start.Add(2 * time.Hour))
	f.command(details)
	T := time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)
	f.tick(T.Add(-workflow.FinalNoticeBefore))
	text, files, _ := f.releasePack(f.tick(T))
	return text, files
}

// TestReleasePackWithoutPullRequest: the README's incident with a commit but
// no pull request among its references is released with its CVE draft and
// without a CVE data map; the pack says why and how to list the pull
// requests next time.
func TestReleasePackWithoutPullRequest(t *testing.T) {
	details := strings.Replace(readmeDetails, "https://github.com/example/example/pull/123\n", "", 1)
	if details == readmeDetails {
		t.Fatal("the README's details name no pull request to take out")
	}
	text, files := releaseReadme(t, readmeCommands, details)
	if _, ok := files["cve-record.json"]; !ok {
		t.Errorf("no CVE draft attached: %v", fileNames(files))
	}
	if _, ok := files["cve-data-map.yaml"]; ok {
		t.Errorf("a CVE data map without a pull request was attached")
	}
	daemontest.MustContain(t, "release pack", text,
		"No CVE data map (cve-data-map.yaml) is attached: the references of SEC-2026-0001 name no pull request",
		"list the fix's pull requests with /set references before /approve.")
	if strings.Contains(text, "- cve-data-map.yaml") {
		t.Errorf("the pack lists a data map it does not attach:\n%s", text)
	}
}

// TestReleasePackDataMapGaps: with a CVSS 4.0 vector, which krel cannot
// read, the map is attached and the pack says what krel will refuse.
func TestReleasePackDataMapGaps(t *testing.T) {
	v31 := "/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n"
	commands := strings.Replace(readmeCommands, v31, "/cvss CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N\n", 1)
	if commands == readmeCommands {
		t.Fatalf("the README's commands have no %q", v31)
	}
	text, files := releaseReadme(t, commands, readmeDetails)
	if _, ok := files["cve-data-map.yaml"]; !ok {
		t.Errorf("no CVE data map attached: %v", fileNames(files))
	}
	daemontest.MustContain(t, "release pack", text, "What the records of SEC-2026-0001 lack, and how to fill it:",
		"- CVE data map (/cvss): krel reads CVSS v3.x vectors only and refuses this 4.0 vector")
}

func fileNames(m map[string][]byte) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return fmt.Sprint(ks)
}
