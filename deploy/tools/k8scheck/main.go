// Command k8scheck checks baldur-audit's deployment artifacts for real, without a cluster:
//
//	k8scheck render DIR                          print the kustomize build of DIR (what `kubectl kustomize DIR` prints)
//	k8scheck manifests [-k DIR] [-env-names N,…] [-require-components C,…] [-secrets-from F] [FILE|-]
//	                                             decode every document of a rendered stream (FILE, stdin, or the
//	                                             build of DIR) into its Kubernetes or prometheus-operator Go type,
//	                                             unknown and duplicate fields being errors, then check the
//	                                             project's policy (non-root, read-only root, probes, replicas…)
//	k8scheck compose [-env-names N,…] FILE       load a compose file as `docker compose config` does (compose-go:
//	                                             the compose-spec schema, interpolation, consistency), then the policy
//
// Each problem is one line on stdout; the exit status is 0 when there is none, 1 when there are
// problems, 2 when the input could not be read or rendered (or on a usage error).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

const usage = `usage:
  k8scheck render DIR
  k8scheck manifests [-k DIR] [-env-names NAME,...] [-require-components NAME,...]
                    [-secrets-from SECRETS.yaml] [FILE|-]
  k8scheck compose [-env-names NAME,NAME...] FILE
`

// errUnreadable marks input that could not be read, parsed as YAML or rendered: exit 2.
var errUnreadable = errors.New("unreadable input")

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var problems []string
	var err error
	switch args[0] {
	case "render":
		if len(args) != 2 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		var out []byte
		out, err = render(args[1])
		if err == nil {
			_, err = stdout.Write(out)
		}
	case "manifests":
		problems, err = manifestsCommand(args[1:], stdin, stderr)
	case "compose":
		problems, err = composeCommand(context.Background(), args[1:], stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "k8scheck: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "k8scheck: %s\n", oneLine(err.Error()))
		return 2
	}
	for _, problem := range problems {
		fmt.Fprintln(stdout, oneLine(problem))
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "k8scheck: %d problem(s)\n", len(problems))
		return 1
	}
	return 0
}

func manifestsCommand(args []string, stdin io.Reader, stderr io.Writer) ([]string, error) {
	flags := flag.NewFlagSet("manifests", flag.ContinueOnError)
	flags.SetOutput(stderr)
	dir := flags.String("k", "", "render this kustomization (krusty) instead of reading a stream")
	envNames := flags.String("env-names", "", "comma-separated names: every BALDUR_* variable the workloads set must be one of them")
	required := flags.String("require-components", "", "comma-separated app.kubernetes.io/component values that must each have a workload")
	secretsFrom := flags.String("secrets-from", "", "a file of Secrets (an example set): every secret and key the workloads reference must be in it")
	if err := flags.Parse(args); err != nil {
		return nil, err
	}
	var stream []byte
	var err error
	switch {
	case *dir != "" && flags.NArg() > 0:
		return nil, errors.New("give -k DIR or a FILE, not both")
	case *dir != "":
		stream, err = render(*dir)
	case flags.NArg() > 1:
		return nil, errors.New("give one FILE (or - for stdin)")
	case flags.NArg() == 1 && flags.Arg(0) != "-":
		stream, err = os.ReadFile(flags.Arg(0))
	default:
		stream, err = io.ReadAll(stdin)
	}
	if err != nil {
		return nil, err
	}
	objects, problems, err := decodeStream(stream)
	if err != nil {
		return nil, err
	}
	policy := newPolicy(objects, splitNames(*envNames), sortedKeys(splitNames(*required)))
	problems = append(problems, policy.check()...)
	if *secretsFrom != "" {
		text, err := os.ReadFile(*secretsFrom)
		if err != nil {
			return nil, err
		}
		secrets, secretProblems, err := decodeStream(text)
		if err != nil {
			return nil, err
		}
		problems = append(problems, secretProblems...)
		problems = append(problems, policy.checkSecretRefs(*secretsFrom, secrets)...)
	}
	return problems, nil
}

func splitNames(text string) map[string]bool {
	names := map[string]bool{}
	for _, name := range strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		names[name] = true
	}
	return names
}

func sortedKeys(set map[string]bool) []string {
	keys := make([]string, 0, len(set))
	for key := range set {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return keys
}

func oneLine(text string) string {
	return strings.Join(strings.Fields(text), " ")
}
