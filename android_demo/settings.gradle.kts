pluginManagement {
    repositories {
        google {
            content {
                includeGroupByRegex("com\\.android.*")
                includeGroupByRegex("com\\.google.*")
                includeGroupByRegex("androidx.*")
            }
        }
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google() // LiteRT is published on Google Maven only
        mavenCentral()
    }
}

rootProject.name = "edgekd-demo"
include(":app")
include(":core") // pure-Java pre/post-processing, unit-tested on the JVM against Python golden vectors
