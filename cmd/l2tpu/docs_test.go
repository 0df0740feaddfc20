package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/l2tpu/l2tpu/cli"
)

// TestHelpAndManMatchTheParser: every keyword the usage text offers is one
// the parser accepts, and the man page documents it.
func TestHelpAndManMatchTheParser(t *testing.T) {
	man, err := os.ReadFile("../../man/l2tpu.8")
	if err != nil {
		t.Fatal(err)
	}
	manText := strings.ReplaceAll(string(man), `\-`, "-")
	words := regexp.MustCompile(`\b[a-z][a-z0-9]*_[a-z0-9_]+\b|\b(?:encap|name|local|remote|cookie|seq)\b`).FindAllString(cli.Usage(cli.Prog), -1)
	if len(words) < 15 {
		t.Fatalf("found only %v", words)
	}
	for _, w := range words {
		args := []string{"add", "session", w, "1"}
		_, err := cli.Parse(args)
		if e, ok := err.(*cli.ExitError); ok && strings.HasPrefix(e.Msg, "Unknown command") {
			t.Errorf("usage offers %q but the parser rejects it", w)
		}
		if !strings.Contains(manText, w) {
			t.Errorf("man page does not mention %q", w)
		}
	}
	for _, opt := range []string{"-json", "-pretty", "-oneline", "-stats", "-batch", "-force", "-Version"} {
		if !strings.Contains(manText, opt) {
			t.Errorf("man page lacks %s", opt)
		}
		var out, errb strings.Builder
		if code := run([]string{opt[:2], "help"}, nil, &out, &errb); opt != "-Version" && opt != "-batch" && code == 255 && strings.Contains(errb.String(), "is unknown") {
			t.Errorf("%s not accepted", opt[:2])
		}
	}
}

// TestManDocumentsDaemonFlags: every flag of l2tpu daemon is in the man
// page.
func TestManDocumentsDaemonFlags(t *testing.T) {
	man, err := os.ReadFile("../../man/l2tpu.8")
	if err != nil {
		t.Fatal(err)
	}
	manText := strings.ReplaceAll(string(man), `\-`, "-")
	var out, errb strings.Builder
	run([]string{"daemon", "-h"}, nil, &out, &errb)
	flags := regexp.MustCompile(`(?m)^\s+(-[a-z0-9-]+)`).FindAllStringSubmatch(errb.String()+out.String(), -1)
	if len(flags) < 8 {
		t.Fatalf("daemon usage lists %d flags:\n%s", len(flags), errb.String())
	}
	for _, f := range flags {
		if !regexp.MustCompile(regexp.QuoteMeta(f[1]) + `\b`).MatchString(manText) {
			t.Errorf("man page does not document l2tpu daemon %s", f[1])
		}
	}
}

// TestDaemonFlagErrors: bad daemon flags are usage errors (255) with a
// message that says what is allowed, before anything is started.
func TestDaemonFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"daemon", "-tap-queues", "0"}, "-tap-queues 0: from 1 to 256"},
		{[]string{"daemon", "-tap-queues", "257"}, "-tap-queues 257: from 1 to 256"},
		{[]string{"daemon", "-tap-backend", "x"}, `invalid value "x" for flag -tap-backend: the TAP backend must be auto, water or unix, not "x"`},
		{[]string{"daemon", "-tap-backend", "Unix"}, `invalid value "Unix" for flag -tap-backend: the TAP backend must be auto, water or unix, not "Unix"`},
	} {
		var out, errb strings.Builder
		if code := run(tc.args, nil, &out, &errb); code != 255 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, %q; want 255 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
