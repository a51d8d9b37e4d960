package main

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/embargo-project/embargo/workflow"
)

// cmdCVSS implements `embargo cvss [VECTOR…]`: for each vector (the arguments,
// or one per line on stdin when there are none; blank lines and # comments
// skipped) it prints "VECTOR<TAB>SCORE<TAB>SEVERITY", the score with one
// decimal and the severity None, Low, Medium, High or Critical (FIRST). A bad
// vector gets a line on stderr naming the bad metric; after every line is
// processed, the function returns an error if any vector was bad.
func cmdCVSS(args []string, s stdio) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		_, err := fmt.Fprint(s.out, cvssHelp)
		return err
	}
	bad := 0
	score := func(v string) {
		line, err := workflow.ScoreLine(v)
		if err != nil {
			bad++
			fmt.Fprintln(s.err, "embargo cvss:", err)
			return
		}
		fmt.Fprintln(s.out, line)
	}
	if len(args) > 0 {
		for _, v := range args {
			score(v)
		}
	} else {
		sc := bufio.NewScanner(s.in)
		for sc.Scan() {
			if v := strings.TrimSpace(sc.Text()); v != "" && !strings.HasPrefix(v, "#") {
				score(v)
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("cvss: read standard input: %w", err)
		}
	}
	if bad > 0 {
		return fmt.Errorf("cvss: %d bad vector(s)", bad)
	}
	return nil
}

const cvssHelp = `Usage: embargo cvss [VECTOR...]

Scores CVSS 3.1 and 4.0 vectors as the FIRST calculators do. Prints
VECTOR<TAB>SCORE<TAB>SEVERITY per vector; reads one vector per line from
standard input when none is given. A bad vector gets a line on stderr naming
the bad metric, and the exit status is 1.

Examples:
  embargo cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H
  embargo cvss < vectors.txt
`
