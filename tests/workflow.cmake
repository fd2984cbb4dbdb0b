# The GitHub Actions workflow (.github/workflows/ci.yml) is valid YAML and has the four jobs.
add_test(NAME workflow_yaml
  COMMAND /usr/bin/python3 -c
    "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); missing = {'linux', 'macos', 'freebsd', 'windows'} - set(d.get('jobs', {})); sys.exit('ci.yml: missing jobs: ' + ', '.join(sorted(missing)) if missing else 0)"
    ${PROJECT_SOURCE_DIR}/.github/workflows/ci.yml)
