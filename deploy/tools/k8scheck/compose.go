package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// composeServices are the services of the project's image that the compose file must define.
var composeServices = []string{"init", "chainer", "monitor"}

func composeCommand(ctx context.Context, args []string, stderr io.Writer) ([]string, error) {
	flags := flag.NewFlagSet("compose", flag.ContinueOnError)
	flags.SetOutput(stderr)
	envNames := flags.String("env-names", "", "comma-separated names: every BALDUR_* variable the services set must be one of them")
	if err := flags.Parse(args); err != nil {
		return nil, err
	}
	if flags.NArg() != 1 {
		return nil, fmt.Errorf("give one compose FILE")
	}
	return checkCompose(ctx, flags.Arg(0), splitNames(*envNames))
}

// checkCompose loads a compose file the way `docker compose config` does — compose-go, the
// library behind the compose plugin: the compose-spec JSON schema (unknown keys are errors),
// interpolation, and the consistency of references between services, volumes and networks —
// then checks the project's policy on the services built from deploy/Dockerfile.
func checkCompose(ctx context.Context, path string, envNames map[string]bool) ([]string, error) {
	options, err := cli.NewProjectOptions(
		[]string{path},
		cli.WithOsEnv,
		cli.WithProfiles([]string{"*"}), // every service, whatever its profile
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, err
	}
	project, err := options.LoadProject(ctx)
	if err != nil {
		// A schema violation is a finding about the file, not a failure to read it.
		return []string{fmt.Sprintf("%s: %v", path, err)}, nil
	}
	var problems []string
	add := func(service, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("service %s: ", service)+fmt.Sprintf(format, args...))
	}
	names := make([]string, 0, len(project.Services))
	for name := range project.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		service := project.Services[name]
		for _, port := range service.Ports {
			if port.Published != "" && port.HostIP != "127.0.0.1" {
				add(name, "publishes port %s on %q: publish on 127.0.0.1 only", port.Published, port.HostIP)
			}
		}
		if service.Build == nil || filepath.Base(service.Build.Dockerfile) != "Dockerfile" {
			continue
		}
		checkComposeService(name, service, envNames, add)
	}
	for _, name := range composeServices {
		if _, ok := project.Services[name]; !ok {
			problems = append(problems, fmt.Sprintf("%s: no service %q", path, name))
		}
	}
	return problems, nil
}

func checkComposeService(name string, service types.ServiceConfig, envNames map[string]bool,
	add func(service, format string, args ...any)) {
	user, _, _ := strings.Cut(service.User, ":")
	if user == "" || user == "0" || user == "root" {
		add(name, "user must be a fixed non-root UID:GID, found %q", service.User)
	}
	if !service.ReadOnly {
		add(name, "read_only must be true")
	}
	if !slices.Contains(service.CapDrop, "ALL") {
		add(name, "cap_drop must contain ALL")
	}
	if len(service.CapAdd) > 0 {
		add(name, "cap_add must be empty, found %v", service.CapAdd)
	}
	if !slices.Contains(service.SecurityOpt, "no-new-privileges:true") {
		add(name, "security_opt must contain no-new-privileges:true")
	}
	if service.Privileged {
		add(name, "must not be privileged")
	}
	for variable := range service.Environment {
		if len(envNames) > 0 && strings.HasPrefix(variable, "BALDUR_") && !envNames[variable] {
			add(name, "environment sets %s, which is not a known baldur-audit variable", variable)
		}
	}
}
