package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestChart draws the chart of a run (the checked-in sample) and checks
// that every method and figure is on it.
func TestChart(t *testing.T) {
	rs := []Result{{Method: "vxlan", TCPGbps: 12.84, UDP64Kpps: 133.9, RTTp50us: 20}, {Method: "l2tpu-no-tapgro", TCPGbps: 1.26, UDP64Kpps: 77.8, RTTp50us: 277}}
	if p := os.Getenv("L2TPU_CHART_FROM"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var j struct{ Results []Result }
		if err := json.Unmarshal(b, &j); err != nil {
			t.Fatal(err)
		}
		rs = j.Results
	}
	svg := chart(rs, "test machine")
	for _, r := range rs {
		if !strings.Contains(svg, ">"+r.Method+"<") {
			t.Errorf("%s missing", r.Method)
		}
	}
	for _, want := range []string{"12.84 Gb/s", "134 kpps", "277 µs"} {
		if len(rs) == 2 && !strings.Contains(svg, want) {
			t.Errorf("%q missing", want)
		}
	}
	if out := os.Getenv("L2TPU_CHART_OUT"); out != "" {
		os.WriteFile(out, []byte(svg), 0o644)
	}
}
